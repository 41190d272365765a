from typing import Any

def line(series: str, fields: dict[str, Any], time_ns: int, keys: dict[str, str], floats: dict[float, str],
         max_floats: int, /) -> str | None: ...
