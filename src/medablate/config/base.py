"""What every part of a study's config is made of: frozen models that refuse unknown keys, torch classes by name,
and the base of every model's config class (each model's file defines its own; see medablate.models)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from medablate.core import names


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Named(BaseModel):
    """A torch class by name plus its keyword arguments, written flat: `{name: StepLR, step_size: 10}`."""

    model_config = ConfigDict(extra="allow", frozen=True)
    name: str

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


def as_named(value: Any) -> Any:
    return {"name": value} if isinstance(value, str) else value


class ActivationConfig(Named):
    @model_validator(mode="after")
    def _known(self) -> ActivationConfig:
        table = names.activations()
        if self.name not in table:
            raise ValueError(names.unknown_name_message("activation", self.name, table))
        names.check_kwargs("activation", table[self.name], self.kwargs)
        return self


class ModelBase(Strict):
    weights: Path | None = Field(None, description="a state dict to start from (partial loading; see medablate.weights)")
    name: str  # each model's class narrows it to its own name(s)

    def describe(self, start: str) -> str:
        """The network in the methods paragraph (each model's config says it), with how its weights started."""
        raise NotImplementedError
