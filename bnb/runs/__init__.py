"""Many instances: suites with progress and summaries, worker processes, Ray clusters, the warm server and heuristic
studies."""
