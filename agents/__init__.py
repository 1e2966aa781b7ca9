"""Reference PyTorch agents for the commenv games (CPU or CUDA, same code)."""
