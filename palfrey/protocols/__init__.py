"""Protocol cores: HTTP/1.1 on h11 and httptools."""
