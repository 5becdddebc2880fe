"""With what the lineage runs: storage, tracking and checkpoint resources (Dagster ConfigurableResources)."""

from resources.checkpoint_store import CheckpointStore
from resources.duckdb_store import DuckDBStore
from resources.launcher import TrainingLauncher
from resources.mlflow_tracking import MLflowTracking, MLflowUnavailable, TrackedRun
from resources.profile import LineageProfile
from resources.ray_launcher import RayTrainingLauncher
from resources.raw_data import RawDataFolder

__all__ = ["CheckpointStore", "DuckDBStore", "LineageProfile", "MLflowTracking", "MLflowUnavailable",
           "RawDataFolder", "RayTrainingLauncher", "TrackedRun", "TrainingLauncher"]
