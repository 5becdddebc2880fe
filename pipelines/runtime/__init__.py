"""Runtime plumbing around stock Dagster, apart from the domain steps in ``pipelines/``: the code location's
step executor and the fork server its steps fork from (``executor``, ``fork_server``, ``fork_server_preload``),
routing steps as Kubernetes Jobs on a cluster (``cluster``), asking Dagster what is stale and launching it
(``staleness``), reaping runs whose worker died (``reaper``), trainers that die with their step (``orphans``),
and the Host-checking proxy in front of the Dagster UI (``ui_proxy``)."""
