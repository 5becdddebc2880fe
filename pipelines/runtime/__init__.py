"""Runtime plumbing around stock Dagster, apart from the domain steps in ``pipelines/``: reaping runs
whose worker died (``reaper``), trainers that die with their step (``orphans``), and the Host-checking
proxy in front of the Dagster UI (``ui_proxy``), and routing steps as Kubernetes Jobs on a cluster (``cluster``)."""
