"""The Hugging Face Hub, shared by the registry's Hub backend (bundles) and the model sources on the Hub:
one client with errors mapped to sowmeta's (``client.py``) over an HTTP transport with bounded times (``http.py``)."""
