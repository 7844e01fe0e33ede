"""Property predictors on molecule embeddings: network heads, forests stored as arrays, extra inputs."""
