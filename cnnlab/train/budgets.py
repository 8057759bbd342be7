"""The operator's budgets: how much one run may cost on a shared server.

Checked twice: before a run is queued (the pages disable Train and say why, the CLI exits
2) and again in the worker (a run that gets past a stale page still cannot exceed them;
the wall-clock and memory budgets can only be enforced there).

Set by the operator, strongest first: ``CNNLAB_*`` environment variables, then a
``[budgets]`` table in ``.streamlit/secrets.toml``, then the defaults below, which fit a
laptop and the lab's largest preset with room to spare::

    [budgets]
    max_params = 20_000_000           # CNNLAB_MAX_PARAMS
    max_activation_mb = 2048          # CNNLAB_MAX_ACTIVATION_MB: forward activations per batch
    max_epochs = 200                  # CNNLAB_MAX_EPOCHS
    max_run_minutes = 240             # CNNLAB_MAX_RUN_MINUTES: then the run ends "time limit"
    max_runs_per_user = 3             # CNNLAB_MAX_RUNS_PER_USER: queued + running
    max_worker_memory_mb = 8192       # CNNLAB_MAX_WORKER_MEMORY_MB: a worker above it is stopped
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cnnlab.settings import SECRETS_FILE, secrets_table

if TYPE_CHECKING:
    from cnnlab.model.config import ModelConfig

MB = 1024 * 1024


@dataclass(frozen=True)
class Budgets:
    """Upper bounds for one run and for one user's share of the queue."""

    max_params: int = 20_000_000
    max_activation_mb: int = 2048
    max_epochs: int = 200
    max_run_minutes: float = 240.0
    max_runs_per_user: int = 3
    max_worker_memory_mb: int = 8192

    def to_dict(self) -> dict[str, Any]:
        """The budgets as a plain dict (they travel to workers with the run spec)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Budgets:
        """Budgets from a mapping of field names (unknown keys are an error)."""
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(
                f"Unknown budget setting(s) {', '.join(sorted(unknown))}; allowed: "
                f"{', '.join(cls.__dataclass_fields__)}."
            )
        values: dict[str, Any] = {}
        for name, value in data.items():
            kind = float if name == "max_run_minutes" else int
            try:
                values[name] = kind(value)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"Budget {name} = {value!r} is not a number.") from exc
            if values[name] <= 0:
                raise ValueError(f"Budget {name} = {value!r} must be above 0.")
        return cls(**values)


def load(secrets_file: Path | str = SECRETS_FILE) -> Budgets:
    """The operator's budgets: environment over secrets.toml's [budgets] over defaults.

    Raises ValueError naming the bad setting.
    """
    values = secrets_table(secrets_file, "budgets")
    for name in Budgets.__dataclass_fields__:
        env = os.environ.get("CNNLAB_" + name.upper())
        if env:
            values[name] = env
    return Budgets.from_dict(values)


def activation_bytes(config: ModelConfig, input_shape: tuple[int, ...], n_classes: int,
                     batch_size: int) -> int:
    """Forward activation memory of one batch in bytes (float32, every layer's output; a
    backbone's every inner layer at its own input size, from backbones.BACKBONES)."""
    from cnnlab.model import models

    per_sample = models.memory_bytes(config, input_shape, n_classes)["activations_per_sample"]
    return per_sample * batch_size


def problems(budgets: Budgets, config: ModelConfig, input_shape: tuple[int, ...],
             n_classes: int, epochs: int, batch_size: int) -> list[str]:
    """Every way this run would exceed ``budgets``, one sentence each (empty: within them).

    A backbone counts in full: its frozen parameters are still loaded and its activations
    are computed at its input size (e.g. 224×224) whatever the images' size.
    """
    from cnnlab.model import config as config_mod
    from cnnlab.model import models
    from cnnlab.model.backbones import BACKBONES

    out: list[str] = []
    if epochs > budgets.max_epochs:
        out.append(f"Epochs is {epochs}; this server allows at most {budgets.max_epochs} "
                   "per run. Use fewer epochs (early stopping usually ends sooner anyway).")
    if config_mod.validate(config, tuple(input_shape)):
        return out  # an impossible model has no size to check; validate() says why
    row = BACKBONES.get(config.backbone)
    params = models.total_params(config, input_shape, n_classes)
    if params > budgets.max_params:
        fix = ("Use fewer filters or dense units, or more pooling before the dense layers."
               if row is None else
               f"{row.name} alone has {row.params:,}: choose a smaller backbone "
               f"(MobileNetV3Small has {BACKBONES['MobileNetV3Small'].params:,}) or fewer "
               "dense units.")
        out.append(f"The model has {params:,} parameters; this server allows at most "
                   f"{budgets.max_params:,}. {fix}")
    act = activation_bytes(config, input_shape, n_classes, batch_size)
    if act > budgets.max_activation_mb * MB:
        fix = ("batch size or fewer filters in the first blocks." if row is None else
               f"batch size or a smaller backbone ({row.name} works on "
               f"{row.input_size}×{row.input_size} images).")
        out.append(f"One batch of {batch_size} needs {act / MB:,.0f} MB of activations; this "
                   f"server allows at most {budgets.max_activation_mb:,} MB. Use a smaller "
                   f"{fix}")
    return out


def queue_problem(budgets: Budgets, active_runs: int) -> str | None:
    """Why one more run for a user with ``active_runs`` queued or running is refused."""
    if active_runs >= budgets.max_runs_per_user:
        return (f"You already have {active_runs} run(s) queued or training; this server allows "
                f"{budgets.max_runs_per_user} per user. Wait for one to finish or stop one.")
    return None
