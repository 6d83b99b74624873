#!/usr/bin/env python3
"""Writes a JWT A/B's B side into DIR: `ab-jwt.toml` (ab.sh's pool route
behind a `jwt` filter whose JWKS holds a fresh ES256 key), `jwt.lua`
(wrk sending a token that key signed, valid for a day) and
`jwt-fresh.lua` (wrk sending, in turn, each of `FRESH` such tokens, all
different: with more of them than the filter remembers, 10,000, nearly
every request is a token seen for the first time).

Run: python3 host/benches/jwt-setup.py DIR [FRESH]   (needs python3-cryptography;
FRESH defaults to 50000)
"""
import base64
import json
import pathlib
import sys
import time

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


out = pathlib.Path(sys.argv[1])
key = ec.generate_private_key(ec.SECP256R1())
numbers = key.public_key().public_numbers()
jwk = {"kty": "EC", "crv": "P-256", "kid": "bench", "alg": "ES256",
       "x": b64(numbers.x.to_bytes(32, "big")), "y": b64(numbers.y.to_bytes(32, "big"))}
header = b64(json.dumps({"alg": "ES256", "kid": "bench", "typ": "JWT"}).encode())


def token(jti: int) -> str:
    """A token of `sub` bench, valid for a day, its `jti` making it unique."""
    claims = b64(json.dumps({"iss": "https://auth.bench", "aud": "https://api.bench",
                             "sub": "bench", "jti": str(jti),
                             "exp": int(time.time()) + 86400}).encode())
    r, s = decode_dss_signature(key.sign(f"{header}.{claims}".encode(), ec.ECDSA(hashes.SHA256())))
    return f"{header}.{claims}.{b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


fresh = int(sys.argv[2]) if len(sys.argv) > 2 else 50000
jwks = json.dumps({"keys": [jwk]})
(out / "ab-jwt.toml").write_text(f"""[[listeners]]
listen = "127.0.0.1:19310"

[[routes]]
pool = "p"
filters = ["jwt"]

[pools.p]
strategy = {{ kind = "round-robin" }}
instances = [{{ url = "http://127.0.0.1:19111" }}, {{ url = "http://127.0.0.1:19112" }}, {{ url = "http://127.0.0.1:19113" }}]

[filters.jwt]
kind = "jwt"
providers = [{{ issuer = "https://auth.bench", audiences = ["https://api.bench"], jwks = '{jwks}' }}]
""")
(out / "jwt.lua").write_text(f'wrk.headers["Authorization"] = "Bearer {token(0)}"\n')
(out / "tokens.txt").write_text("".join(token(i) + "\n" for i in range(1, fresh + 1)))
(out / "jwt-fresh.lua").write_text(f"""tokens = {{}}
for line in io.lines("{(out / 'tokens.txt').resolve()}") do tokens[#tokens + 1] = line end
i = 0
request = function()
  i = i % #tokens + 1
  return wrk.format(nil, nil, {{ Authorization = "Bearer " .. tokens[i] }})
end
""")
print(out / "ab-jwt.toml", out / "jwt.lua", out / "jwt-fresh.lua")
