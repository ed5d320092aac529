"""The `holidays` package's United States calendar, without the rest of the world's.

`holidays.country_holidays("US")` imports the `holidays.countries` package, whose
`__init__` imports all of its 300 country modules: about 8 MB in every process, to use
one. The United States module only imports the library's shared base classes, so it is
loaded here from its own file, as the one module of that package this service needs. If
something else imports `holidays.countries` later, the package finds this module already
loaded and uses it.
"""

from __future__ import annotations

import functools
import importlib.util
import sys
from pathlib import Path
from typing import Any

import holidays

_MODULE = "holidays.countries.united_states"


@functools.cache
def united_states_class() -> Any:
    module = sys.modules.get(_MODULE)
    if module is None:
        path = Path(holidays.__file__).parent / "countries" / "united_states.py"
        spec = importlib.util.spec_from_file_location(_MODULE, path)
        if spec is None or spec.loader is None:  # pragma: no cover - a broken install
            return functools.partial(holidays.country_holidays, "US")
        module = importlib.util.module_from_spec(spec)
        sys.modules[_MODULE] = module
        spec.loader.exec_module(module)
    return module.UnitedStates


def us_holidays(year: int, subdiv: str | None = None) -> dict[Any, str]:
    """The US (federal, or a state's) holidays of one year, with their observed dates."""
    return dict(united_states_class()(subdiv=subdiv, years=year))
