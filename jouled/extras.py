"""Optional parts behind extras: a command checks its extra's modules first, and a missing one is one line naming it."""

from __future__ import annotations

import importlib

from jouled.errors import MissingExtra, UserError

# import name -> what `pip install` calls it, where the two differ
PIP_NAME = {"sklearn": "scikit-learn", "grafana_client": "grafana-client", "pyvisa_sim": "pyvisa-sim"}


def require(what: str, extra: str, *modules: str) -> None:
    """Import each module (the command is about to use it anyway); raise MissingExtra for the first one missing.

    `what` is what needs it, as the user typed it (e.g. "jouled nas simulate", "--plot-out").
    """
    for name in modules:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as e:
            # a module missing *inside* an installed package is a broken install, not a missing extra
            if e.name is not None and e.name.split(".")[0] != name.split(".")[0]:
                raise UserError(f"{name}: installed but it fails to import ({e}) — reinstall it: "
                                f"pip install --force-reinstall '{PIP_NAME.get(name, name)}'") from None
            raise MissingExtra(what, extra, PIP_NAME.get(name, name)) from None
        except ImportError as e:
            raise UserError(f"{name}: installed but it fails to import ({e}) — reinstall it: "
                            f"pip install --force-reinstall '{PIP_NAME.get(name, name)}'") from None
