"""YAML as users write it and as medablate reads it back (study files, a run's config.yaml)."""

from __future__ import annotations

import re
from typing import Any

import yaml


class Loader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2's float rule, so `1e-4` and `5E-3` are numbers, not strings, and YAML's
    rule that a mapping's keys are unique (PyYAML lets the later one win silently: a pasted second `training:`
    would replace the first without a word)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                first = seen.setdefault(key, key_node.start_mark)
            except TypeError:  # an unhashable key: PyYAML reports it itself
                continue
            if first is not key_node.start_mark:
                raise yaml.constructor.ConstructorError(
                    None, None, f"the key '{key}' appears twice in one mapping (first at line {first.line + 1}): YAML "
                                "keys must be unique; merge the two into one", key_node.start_mark)
        return super().construct_mapping(node, deep)


FLOAT = re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.X)
Loader.yaml_implicit_resolvers = {k: [r for r in v if r[0] != "tag:yaml.org,2002:float"]
                                  for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
Loader.add_implicit_resolver("tag:yaml.org,2002:float", FLOAT, list("-+0123456789."))


def load_yaml(text: str) -> Any:
    """YAML as users write it: numbers in exponent notation (`lr: 1e-4`) are floats."""
    return yaml.load(text, Loader=Loader)  # noqa: S506 - a SafeLoader subclass
