import concurrent.futures, hashlib, os, re, sys, tempfile, urllib.parse, urllib.request
lock, dest = sys.argv[1], sys.argv[2]
text = open(lock, encoding="utf-8").read()
try:
    import tomllib
    packages = [[(w["url"], w["hashes"]["sha256"]) for w in p.get("wheels", [])]
                for p in tomllib.loads(text)["packages"]]
except ImportError:  # Python < 3.11: the lock's wheel entries are one line each
    packages = [re.findall(r'url = "([^"]+\.whl)".*?sha256 = "([0-9a-f]{64})"', block)
                for block in text.split("[[packages]]")[1:]]
chosen = []
for wheels in packages:
    if not wheels:
        sys.exit("a package of the lock has no wheel")
    url, want = sorted(wheels, key=lambda w: w[0].endswith("-none-any.whl"))[0]
    chosen.append((urllib.parse.unquote(url.rsplit("/", 1)[1]), url, want))

def digest(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()

def get(item):
    name, url, want = item
    path = os.path.join(dest, name)
    if "/" in name or name.startswith("."):
        raise SystemExit(f"odd wheel name {name!r}")
    if os.path.exists(path) and digest(path) == want:
        return name, want, 0
    fd, tmp = tempfile.mkstemp(dir=dest, prefix=".part-")
    try:
        h, size = hashlib.sha256(), 0
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=120) as r:
            for chunk in iter(lambda: r.read(1 << 20), b""):
                h.update(chunk)
                out.write(chunk)
                size += len(chunk)
        if h.hexdigest() != want:
            raise SystemExit(f"{name}: sha256 differs from the lock")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
        return name, want, size
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)

total = 0
with concurrent.futures.ThreadPoolExecutor(8) as pool:
    for name, want, size in pool.map(get, chosen):
        print(f"{want}  {name}")
        total += size
print(f"@@bytes {total}")
