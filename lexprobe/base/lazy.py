"""Heavy libraries imported on first use: the engine's (torch, nnsight) and the statistics' (scipy.stats,
scipy.optimize, statsmodels' multiple-testing module).

Modules that a finished study passes through (the stages, the store, suites, interventions, the analysis) take
them from here: ``from lexprobe.base.lazy import torch``. What they get is a stand-in that imports the library the first
time code reads one of its attributes and puts the real module in its place, so opening a finished study reads
tables without loading the engine's stack or scipy (seconds of imports), and anything that measures or tests loads
them as a plain import would. The stand-in is not put into ``sys.modules``: libraries that look there for torch
(scipy's array-API checks, ``inspect.getmodule``) see it only once it is really imported. Type checkers see plain
imports.

transformers is not here: modules that need it at run time import it inside the function that does (its top-level
import alone takes about a second).
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType
from typing import TYPE_CHECKING, Any


class Deferred(ModuleType):
    """A module imported when one of its attributes is first read; then every lexprobe module that holds this
    stand-in holds the real module instead (nnsight's traces read their globals by name: they must find nnsight
    itself)."""

    def __getattr__(self, attr: str) -> Any:
        module = importlib.import_module(self.__name__)
        for name, mod in list(sys.modules.items()):
            if name == "lexprobe" or name.startswith("lexprobe."):
                for var, value in list(vars(mod).items()):
                    if value is self:
                        setattr(mod, var, module)
        return getattr(module, attr)


if TYPE_CHECKING:
    import nnsight as nnsight
    import torch as torch
    from scipy import optimize as optimize
    from scipy import stats as stats
    from statsmodels.stats import multitest as multitest
else:
    torch = Deferred("torch")
    nnsight = Deferred("nnsight")
    stats = Deferred("scipy.stats")
    optimize = Deferred("scipy.optimize")
    multitest = Deferred("statsmodels.stats.multitest")
