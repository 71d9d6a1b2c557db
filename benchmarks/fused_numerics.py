"""Device check: the fused-step kernels compiled against eager, bit for bit, with inductor's default
numerics and with the package's eager-numerics options; plus the time per call.

    python3 benchmarks/fused_numerics.py .        # on a CUDA machine, from the repository root

It imports only the kernel modules (stubs stand in for the rest of the package and for Avalanche),
so it runs on a machine with torch alone. Writes ``$OUT/fused_numerics.json`` (``/tmp`` without
``OUT``); ``docs/benchmarks/fused_numerics_cuda.md`` has its H200 result."""
import os, sys, types, time, json
import torch
ROOT = sys.argv[1]
dev = torch.device("cuda")
pkg = os.path.join(ROOT, "avalanche_fgadahat")
sys.modules["avalanche"] = None
for name, path in [("avalanche_fgadahat", pkg), ("avalanche_fgadahat.masking", pkg + "/masking"),
                   ("avalanche_fgadahat.importance", pkg + "/importance"), ("avalanche_fgadahat.models", pkg + "/models"),
                   ("avalanche_fgadahat.adjustment", pkg + "/adjustment")]:
    m = types.ModuleType(name); m.__path__ = [path]; sys.modules[name] = m
stub = types.ModuleType("avalanche_fgadahat.models.base"); stub.HATBackbone = object; sys.modules[stub.__name__] = stub
for n in ("lookup", "registry", "summing"):
    s = types.ModuleType(f"avalanche_fgadahat.importance.{n}")
    s.resolve_importance_type = None; s.ImportanceType = s.StepContext = object; s.SUMMING_STRATEGIES = {}
    sys.modules[s.__name__] = s
for n in ("base", "engine"):
    s = types.ModuleType(f"avalanche_fgadahat.adjustment.{n}"); s.StepSignals = s.RateEngine = object; sys.modules[s.__name__] = s
from avalanche_fgadahat.adjustment import gradient_step as gs
from avalanche_fgadahat.importance import accumulator as acc
from avalanche_fgadahat.importance.normalize import segment_index
from avalanche_fgadahat.masking import fusion
print("torch", torch.__version__, torch.cuda.get_device_name(), flush=True)
import torch._inductor.config as ic
names = sorted(torch._inductor.list_options())
print("options with div/ftz/fusion/precision/numerics:", [n for n in names if any(k in n for k in ("div", "ftz", "fusion", "precision", "numerics", "libdevice"))], flush=True)
print("package eager-numerics options:", getattr(fusion, "eager_numerics_options", lambda: "n/a")(), flush=True)
WANT = ["eager_numerics.division_rounding", "eager_numerics.disable_ftz", "emulate_precision_casts", "eager_numerics.use_pytorch_libdevice"]
EXACT = {k: True for k in WANT if k in names}
print("exact option set used here:", EXACT, flush=True)
g = torch.Generator(device="cpu").manual_seed(0)
shapes = [(256, 784), (256,), (100, 256), (100,), (64, 100), (64,)]
def rnd(*s, scale=1.0): return (torch.randn(*s, generator=g) * scale).to(dev)
def bits(t): return t.contiguous().view(torch.int32)
def ndiff(a, b): return int(((bits(a) != bits(b)) & ~(a.isnan() & b.isnan())).sum())
def cases():
    for scale in (0.0025, 1.0, 57.3, 400.0):
        grads = [rnd(*s, scale=1e-3) * torch.logspace(-20, 0, 1, device=dev) for s in shapes]
        grads = [gr * (10 ** rnd(*gr.shape, scale=4.0)) for gr in grads]  # spread magnitudes 1e-16..1e3
        rates = [(torch.rand(*s, generator=g) > 0.5).float().to(dev) for s in shapes]
        P = [torch.randint(0, 4, s, generator=g).float().to(dev) for s in shapes]
        k = [torch.tensor(v, device=dev) for v in (1e5, 3.3e4, 1.7e5, 2e5, 9e4, 1e5)]
        e = rnd(420, scale=3.0); eg = rnd(420, scale=1e-2)
        sc = torch.tensor([scale, 400.0 / scale, 50.0], device=dev)
        yield scale, grads, rates, P, k, e, eg, sc
KERNELS = {
    "constant": lambda c: ((lambda gr, r, e, eg, sc: gs._constant_rates(gr, r, True, e, eg, sc)), (c[1], c[2], c[5], c[6], c[7])),
    "soft": lambda c: (gs._soft_rates, (c[1], c[3], c[4], c[5], c[6], c[7])),
    "compensation": lambda c: (gs._compensate, (c[5], c[6], c[7])),
}
def clone(args): return tuple([a.clone() for a in x] if isinstance(x, list) else x.clone() for x in args)
def outputs(args): return [t for x in args for t in (x if isinstance(x, list) else [x])]
results = {}
LIBDEV = {k: v for k, v in EXACT.items() if k != "eager_numerics.use_pytorch_libdevice"}
for label, opts in (("default", {}), ("package", fusion.eager_numerics_options()), ("+libdev", EXACT)):
    for kname, make in KERNELS.items():
        compiled = None; total = 0; n = 0; t_c = t_e = 0.0
        for c in cases():
            fn, args = make(c)
            if compiled is None:
                compiled = torch.compile(fn, dynamic=False, fullgraph=True, options=opts) if opts else torch.compile(fn, dynamic=False, fullgraph=True)
            a1, a2 = clone(args), clone(args)
            with torch.no_grad():
                fn(*a1); compiled(*a2)
            total += sum(ndiff(x, y) for x, y in zip(outputs(a1), outputs(a2))); n += sum(x.numel() for x in outputs(a1))
        # timing (last case)
        with torch.no_grad():
            for f, slot in ((fn, "e"), (compiled, "c")):
                aa = clone(args)
                for _ in range(20): f(*aa)
                torch.cuda.synchronize(); t0 = time.perf_counter()
                for _ in range(200): f(*aa)
                torch.cuda.synchronize(); dt = (time.perf_counter() - t0) / 200 * 1e6
                if slot == "e": t_e = dt
                else: t_c = dt
        results[f"{label}/{kname}"] = (total, n, round(t_e, 1), round(t_c, 1))
        print(f"{label:8s} {kname:13s} differing {total} of {n}; eager {t_e:.1f} us, compiled {t_c:.1f} us per call", flush=True)
    # accumulation
    sizes = (256, 100, 64); gather, segment = segment_index(sizes, dev)
    fa = torch.compile(acc.add_step_importances_, dynamic=False, fullgraph=True, options=opts) if opts else torch.compile(acc.add_step_importances_, dynamic=False, fullgraph=True)
    total = n = 0
    for trial in range(20):
        raws = [(torch.rand(s, generator=g) * 10 ** torch.randint(-35, 5, (1,), generator=g).item()).to(dev) for s in sizes]
        for masks in ([(torch.rand(s, generator=g) ** 8).to(dev) for s in sizes], None):
            s1 = [torch.rand(s, generator=g).to(dev) for s in sizes]; s2 = [x.clone() for x in s1]
            with torch.no_grad():
                acc.add_step_importances_(s1, raws, masks, gather, segment); fa(s2, raws, masks, gather, segment)
            total += sum(ndiff(a, b) for a, b in zip(s1, s2)); n += sum(a.numel() for a in s1)
    print(f"{label:8s} accumulation  differing {total} of {n}", flush=True)
    results[f"{label}/accumulation"] = (total, n)
os.makedirs(os.environ.get("OUT", "/tmp"), exist_ok=True)
json.dump(results, open(os.path.join(os.environ.get("OUT", "/tmp"), "fused_numerics.json"), "w"), indent=1)
