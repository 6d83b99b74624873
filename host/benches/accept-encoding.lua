-- wrk: every request asks for the encoding in $ENCODING (default gzip).
wrk.headers["Accept-Encoding"] = os.getenv("ENCODING") or "gzip"
