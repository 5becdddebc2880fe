"""Declarative automation shared by every derived asset: rebuild when an input's *data* changed.

Like ``AutomationCondition.eager()``, but keyed on data versions rather than on any new
materialization: the raw stage re-run on identical files keeps its data version, so nothing
downstream is requested and nothing retrains. Missing assets are not built automatically (the first
build is an explicit materialization), which keeps a fresh deployment from training on its own.
A new upstream version whose blocking check failed (a mostly broken raw file, a contaminated
training split, a candidate that regressed) requests nothing: ``all_deps_blocking_checks_passed``.
Runs outside automation are refused by the steps themselves (``assets/_tables.py``).
"""

import dagster as dg

AC = dg.AutomationCondition

UPSTREAM_DATA_CHANGED = (
    AC.in_latest_time_window()
    & AC.any_deps_match(
        (AC.data_version_changed() & ~AC.executed_with_root_target()) | AC.will_be_requested()
    ).since_last_handled()
    & AC.all_deps_blocking_checks_passed()
    & ~AC.any_deps_missing()
    & ~AC.any_deps_in_progress()
    & ~AC.in_progress()
).with_label("upstream data changed")
