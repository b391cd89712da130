"""The executor: walks a plan's action graph with bounded parallelism and applies each change."""
