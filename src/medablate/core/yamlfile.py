"""YAML as users write it and as medablate reads it back (study files, a run's config.yaml)."""

from __future__ import annotations

import re
from typing import Any

import yaml


class Rules(yaml.constructor.SafeConstructor, yaml.resolver.Resolver):
    """PyYAML's safe rules with YAML 1.2's float rule, so `1e-4` and `5E-3` are numbers, not strings, and YAML's
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
Rules.yaml_implicit_resolvers = {k: [r for r in v if r[0] != "tag:yaml.org,2002:float"]
                                 for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
Rules.add_implicit_resolver("tag:yaml.org,2002:float", FLOAT, list("-+0123456789."))


class Loader(yaml.reader.Reader, yaml.scanner.Scanner, yaml.parser.Parser, yaml.composer.Composer, Rules):
    """The rules on PyYAML's Python parser: its messages for a user's study file."""

    def __init__(self, stream: Any) -> None:
        yaml.reader.Reader.__init__(self, stream)
        yaml.scanner.Scanner.__init__(self)
        yaml.parser.Parser.__init__(self)
        yaml.composer.Composer.__init__(self)
        Rules.__init__(self)


FastLoader: Any = Loader
if yaml.__with_libyaml__:  # PyYAML's wheels carry libyaml
    class _CLoader(yaml.cyaml.CParser, Rules):
        """The same rules on libyaml's parser: a run's config.yaml, read dozens of times by an analysis, 10x faster."""

        def __init__(self, stream: Any) -> None:
            yaml.cyaml.CParser.__init__(self, stream)
            Rules.__init__(self)

    FastLoader = _CLoader


def load_yaml(text: str, fast: bool = False) -> Any:
    """YAML as users write it: numbers in exponent notation (`lr: 1e-4`) are floats. fast: libyaml's parser, for
    files medablate wrote itself (the same values; a syntax error reads less kindly)."""
    return yaml.load(text, Loader=FastLoader if fast else Loader)  # noqa: S506 - SafeConstructor rules
