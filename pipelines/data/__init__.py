"""Raw data and dataset building: generation, ingestion with quarantine, formatting, splits."""
