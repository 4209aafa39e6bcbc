"""`llmos serve`: an OpenAI-compatible API on the kernel (app.py routes, requests.py bodies,
programs.py what each request runs as in the kernel)."""
