"""The operator's settings file, ``.streamlit/secrets.toml``, read one table at a time.

A shared leaf: budgets (``[budgets]``), sign-in (``[class]``) and every other operator setting
read their own table through ``secrets_table``; the environment overrides it where each says.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

SECRETS_FILE = Path(".streamlit") / "secrets.toml"


def secrets_table(secrets_file: Path | str, table: str) -> dict[str, Any]:
    """The ``[table]`` of the operator's secrets.toml ({} when the file or table is absent).

    Raises ValueError when the file is not valid TOML.
    """
    path = Path(secrets_file)
    if not path.is_file():
        return {}
    try:
        return dict(tomllib.loads(path.read_text(encoding="utf-8")).get(table, {}))
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path} is not valid TOML ({exc}); fix or remove it.") from exc
