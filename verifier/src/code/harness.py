import builtins, io, os, sys

def _rlvr_harness():
    # Everything the harness uses after the program has run is bound here first, so that patching
    # builtins or modules (exec, os.write, ...) cannot change what the harness does or reports. No
    # json: importing it costs more than the interpreter's start-up.
    read, write = os.read, os.write
    exec_, compile_, repr_, str_, len_, type_ = exec, compile, repr, str, len, type
    enumerate_, getattr_, bytes_, range_ = enumerate, getattr, bytes, range
    BaseExc, SysExit, NameErr, TypeErr = BaseException, SystemExit, NameError, TypeError
    TextIOWrapper, BytesIO, BufferedWriter, RawIOBase = io.TextIOWrapper, io.BytesIO, io.BufferedWriter, io.RawIOBase
    inf = float("inf")
    real_open, real_stdin, real_stdout = builtins.open, sys.stdin, sys.stdout

    # 1. The spec: "<length>\n<Python literal>" at the head of stdin.
    head = b""
    while True:
        c = read(0, 1)
        if not c or c == b"\n":
            break
        head += c
    want = int(head)
    buf = bytearray()
    while len_(buf) < want:
        chunk = read(0, want - len_(buf))
        if not chunk:
            break
        buf += chunk
    spec = eval(compile_(bytes_(buf).decode("utf-8"), "spec", "eval"), {"__builtins__": {}})
    del buf
    marker = "\x1e" + spec.pop("nonce") + " "
    code, mode, tests = spec["code"], spec["mode"], spec["tests"]
    stop_on_failure, out_cap = spec.get("stop_on_failure", False), spec.get("output_bytes", 1 << 20)
    del spec
    sys.argv[:] = ["main.py"]

    # 2. Records: "<marker><test> <status> <hex stdout> <hex error>\n", built from builtin-type methods only.
    def hexed(s):
        return s.encode("utf-8", "replace").hex() if s else "-"

    def emit(line):
        data = (marker + line + "\n").encode("ascii")
        while data:
            data = data[write(1, data):]

    def describe(e):
        name = type_(e).__name__
        try:
            text = str_(e)
        except BaseExc:
            text = ""
        return (name + (": " + text if text else ""))[:500]

    class Overflow(Exception):
        pass

    class Sink(RawIOBase):
        def __init__(self):
            self.parts, self.size, self.over = [], 0, False
        def writable(self):
            return True
        def write(self, b):
            n = len_(b)
            if self.size + n > out_cap:
                self.over = True
                raise Overflow("output limit")
            self.parts.append(bytes_(b))
            self.size += n
            return n
        def text(self):
            return b"".join(self.parts).decode("utf-8", "replace")

    def quote(s):
        s = s.replace("\\", "\\\\").replace('"', '\\"')
        if any(c < " " or "\ud800" <= c <= "\udfff" for c in s):
            s = "".join([c if " " <= c < "\ud800" or c > "\udfff" else "\\u%04x" % ord(c) for c in s])
        return '"' + s + '"'

    def as_json(x, depth=0):
        # The returned value as JSON text, compared with the expected value on the host (which never
        # sends it here): only plain data has a JSON form, and an object's own __eq__ plays no part.
        t = type_(x)
        if depth > 100:
            raise TypeErr("return value nested too deeply")
        if x is None:
            return "null"
        if t is bool:
            return "true" if x else "false"
        if t is int:
            return repr_(x)
        if t is float:
            if x != x or x in (inf, -inf):
                raise TypeErr("return value " + repr_(x) + " has no JSON form")
            return repr_(x)
        if t is str:
            return quote(x)
        if t is list or t is tuple:
            return "[" + ",".join([as_json(v, depth + 1) for v in x]) + "]"
        if t is dict:
            for k in x:
                if type_(k) is not str:
                    raise TypeErr("return value has a dict key of type " + type_(k).__name__)
            return "{" + ",".join([quote(k) + ":" + as_json(v, depth + 1) for k, v in x.items()]) + "}"
        raise TypeErr("return value of type " + t.__name__ + " is not plain data")

    def exit_(code=None):
        raise SysExit(code)
    builtins.exit = builtins.quit = exit_

    try:
        compiled = compile_(code, "main.py", "exec")
    except BaseExc as e:
        emit("load " + hexed(describe(e)))
        emit("done")
        return

    if hasattr(sys, "set_int_max_str_digits"):
        sys.set_int_max_str_digits(0)

    def report(i, status, out, error):
        emit("%d %s %s %s" % (i, status, hexed(out), hexed(error)))

    if mode == "stdio":
        for i, t in enumerate_(tests):
            data = t["input"].encode("utf-8")
            sink = Sink()
            stdout = TextIOWrapper(BufferedWriter(sink), encoding="utf-8", errors="replace", newline="\n")
            def open_(file, mode="r", *a, **k):
                if file == 0:
                    return BytesIO(data) if "b" in mode else TextIOWrapper(BytesIO(data), encoding="utf-8")
                return real_open(file, mode, *a, **k)
            builtins.open = open_
            sys.stdin, sys.stdout = TextIOWrapper(BytesIO(data), encoding="utf-8"), stdout
            status, error = "ok", None
            try:
                exec_(compiled, {"__name__": "__main__", "__builtins__": builtins, "__file__": "main.py"})
            except SysExit as e:
                if e.code is not None and e.code != 0:
                    status, error = "error", "SystemExit(" + repr_(e.code)[:100] + ")"
            except BaseExc as e:
                status, error = "error", describe(e)
            try:
                stdout.flush()
            except BaseExc:
                pass
            sys.stdin, sys.stdout = real_stdin, real_stdout
            builtins.open = real_open
            if sink.over:
                status, error = "output_limit", "output over %d bytes" % out_cap
            report(i, status, sink.text(), error)
            if status != "ok" and stop_on_failure:
                break
        emit("done")
        return

    # Call mode: define the program once (any exit while loading is a failure), then run each test.
    g = {"__name__": "solution", "__builtins__": builtins, "__file__": "main.py"}
    sink = Sink()
    sys.stdout = TextIOWrapper(BufferedWriter(sink), encoding="utf-8", errors="replace")
    sys.stdin = TextIOWrapper(BytesIO(b""), encoding="utf-8")
    try:
        exec_(compiled, g)
        failed = None
    except BaseExc as e:
        failed = describe(e) if type_(e) is not SysExit else "SystemExit(" + repr_(e.code)[:100] + ") while loading"
    if failed is not None:
        emit("load " + hexed(failed))
        emit("done")
        return
    for i in range_(len_(tests)):
        t = tests[i]
        status, value, error = "ok", None, None
        try:
            name = t["fn_name"]
            fn = g.get(name)
            if fn is None and "Solution" in g:
                fn = getattr_(g["Solution"](), name)
            if fn is None:
                raise NameErr("no function named " + name)
            value = as_json(fn(*t["args"]))
        except BaseExc as e:
            status, error = "error", describe(e)
        if sink.over:
            status, error = "output_limit", "output over %d bytes" % out_cap
        report(i, status, value, error)
        if status != "ok" and stop_on_failure:
            break
    emit("done")

_rlvr_harness()
del _rlvr_harness
