import hashlib, html.parser, io, os, platform, re, sys, tempfile, urllib.parse, urllib.request, zipfile
mode, where, arg = sys.argv[1:4]
dest = sys.argv[4]
if mode == "index":
    where = os.environ.get("UV_INDEX_URL") or "https://pypi.org/simple"
    page = urllib.parse.urljoin(where.rstrip("/") + "/", "uv/")
    class Links(html.parser.HTMLParser):
        links = []
        def handle_starttag(self, tag, attrs):
            if tag == "a":
                self.links.append(dict(attrs).get("href", ""))
    req = urllib.request.Request(page, headers={"Accept": "text/html"})
    found = Links()
    found.feed(urllib.request.urlopen(req, timeout=60).read().decode())
    libc = "manylinux" if platform.libc_ver()[0] == "glibc" else "musllinux"
    pick = None
    for href in found.links:
        url, _, frag = href.partition("#")
        name = urllib.parse.unquote(url.rsplit("/", 1)[-1])
        if (name.startswith(f"uv-{arg}-py3-none-") and name.endswith(".whl") and libc in name
                and platform.machine() in name and frag.startswith("sha256=")):
            pick = (urllib.parse.urljoin(page, url), frag[len("sha256="):])
            break
    if pick is None:
        sys.exit(f"no uv {arg} wheel for {platform.machine()} ({libc}) on {page}")
    source, want = pick
else:
    source, want = where, arg
# uv's wheel is some 20 MB: more than this is not uv, and is not read into memory.
CAP = 256 << 20
if "://" in source:
    proxies = None if mode == "index" else {}
    data = urllib.request.build_opener(urllib.request.ProxyHandler(proxies)).open(source, timeout=120).read(CAP + 1)
else:
    data = open(source, "rb").read(CAP + 1)
if len(data) > CAP:
    sys.exit(f"uv wheel from {source}: larger than {CAP >> 20} MiB")
if hashlib.sha256(data).hexdigest() != want:
    sys.exit(f"uv wheel from {source}: sha256 differs")
member = next(n for n in zipfile.ZipFile(io.BytesIO(data)).namelist() if re.fullmatch(r"uv-[^/]+\.data/scripts/uv", n))
os.makedirs(dest, mode=0o755, exist_ok=True)
fd, tmp = tempfile.mkstemp(dir=dest, prefix=".uv-")
with os.fdopen(fd, "wb") as out:
    out.write(zipfile.ZipFile(io.BytesIO(data)).read(member))
os.chmod(tmp, 0o755)
os.replace(tmp, os.path.join(dest, "uv"))
