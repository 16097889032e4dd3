"""A signed (AWS SigV4) S3 request, for the test server's setup and checks.

Usage: s3-request.py METHOD http://HOST:PORT/PATH [KEY SECRET [REGION]]
Prints the status and the body; exits 0 on a 2xx answer. Standard library
only.
"""
import datetime
import hashlib
import hmac
import sys
import urllib.error
import urllib.parse
import urllib.request


def sign(key, msg):
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def main():
    method, url = sys.argv[1], sys.argv[2]
    key = sys.argv[3] if len(sys.argv) > 3 else "KILNTESTACCESSKEY"
    secret = sys.argv[4] if len(sys.argv) > 4 else "kilntestsecretkey"
    region = sys.argv[5] if len(sys.argv) > 5 else "us-east-1"
    u = urllib.parse.urlsplit(url)
    now = datetime.datetime.now(datetime.timezone.utc)
    amz_date, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    payload = hashlib.sha256(b"").hexdigest()
    headers = {"host": u.netloc, "x-amz-content-sha256": payload, "x-amz-date": amz_date}
    signed = ";".join(sorted(headers))
    canonical = "\n".join([
        method,
        urllib.parse.quote(u.path or "/"),
        "&".join(sorted(q for q in u.query.split("&") if q)),
        "".join(f"{k}:{headers[k]}\n" for k in sorted(headers)),
        signed,
        payload,
    ])
    scope = f"{day}/{region}/s3/aws4_request"
    to_sign = "\n".join([
        "AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()
    ])
    k = sign(("AWS4" + secret).encode(), day)
    for part in (region, "s3", "aws4_request"):
        k = sign(k, part)
    signature = hmac.new(k, to_sign.encode(), hashlib.sha256).hexdigest()
    headers["authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={key}/{scope}, SignedHeaders={signed}, "
        f"Signature={signature}"
    )
    req = urllib.request.Request(url, method=method, headers=headers, data=b"" if method == "PUT" else None)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            print(r.status)
            sys.stdout.write(r.read().decode(errors="replace"))
    except urllib.error.HTTPError as e:
        print(e.code)
        sys.stdout.write(e.read().decode(errors="replace"))
        sys.exit(1)


main()
