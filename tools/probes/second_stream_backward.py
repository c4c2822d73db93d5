# Run on the GPU machine: python3 tools/probes/second_stream_backward.py [seconds per arm] (docs/performance.md, "Twelfth session").
# Emulates GPT-2 124M's backward (12 layers, B=32, T=1024) with the weight-gradient work (dW GEMMs,
# bias column sums) either on the main stream or on a side stream, joined only where the main
# stream overwrites what the side reads (dact, dqkv, the residual gradient). CUDA graph, sustained.
import sys, time, torch
import torch.nn.functional as Fn
dev = "cuda"; bf = torch.bfloat16
B, T, E, F, H, L = 32, 1024, 768, 3072, 12, 12
N = B * T
def r(*s): return torch.randn(*s, device=dev, dtype=bf)
W = [dict(proj=r(E, F), fc=r(F, E), o=r(E, E), qkv=r(3 * E, E)) for _ in range(L)]
A = [dict(act=r(N, F), ln2=r(N, E), y=r(N, E), ln1=r(N, E)) for _ in range(L)]
G = [dict(proj=torch.zeros(E, F, device=dev, dtype=bf), fc=torch.zeros(F, E, device=dev, dtype=bf),
          o=torch.zeros(E, E, device=dev, dtype=bf), qkv=torch.zeros(3 * E, E, device=dev, dtype=bf),
          bfc=torch.zeros(F, device=dev), bqkv=torch.zeros(3 * E, device=dev)) for _ in range(L)]
dres = r(N, E); dact = r(N, F); dln = r(N, E); dy = r(N, E); dqkv = r(N, 3 * E); tmp = r(N, E)
q = r(B, H, T, 64); k = r(B, H, T, 64); v = r(B, H, T, 64)
side = torch.cuda.Stream()

def ln_bwd():                       # memory-bound stand-in: reads 3, writes 1 [N, E] tensor
    torch.addcmul(dres, dln, tmp, out=dres)
def attn_bwd():                     # compute stand-in: ~3 forward passes of causal attention
    for _ in range(3): Fn.scaled_dot_product_attention(q, k, v, is_causal=True)

def backward(two):
    main = torch.cuda.current_stream()
    ev = lambda: torch.cuda.Event()
    pending = {}                    # name of a buffer the side reads -> event after its last reader
    def on_side(fn):        # run fn on the side stream once main reached this point
        if not two: fn(); return None
        e = ev(); e.record(main); side.wait_event(e)
        with torch.cuda.stream(side): fn()
        d = ev(); d.record(side); return d
    def before_write(name):        # main is about to overwrite `name`
        d = pending.pop(name, None)
        if d is not None: main.wait_event(d)
    for l in reversed(range(L)):
        w, a, g = W[l], A[l], G[l]
        before_write("dact")
        torch.mm(dres, w["proj"], out=dact)                                   # DGELU GEMM (dX)
        d1 = on_side(lambda: g["proj"].addmm_(dres.t(), a["act"]))      # dW c_proj
        torch.mm(dact, w["fc"], out=dln)                                      # c_fc dX
        d2 = on_side(lambda: (g["fc"].addmm_(dact.t(), a["ln2"]), g["bfc"].add_(dact.sum(0, dtype=torch.float32))))
        if d2 is not None: pending["dact"] = d2
        if d1 is not None: main.wait_event(d1)                                # LN2 bwd rewrites dres
        ln_bwd()
        torch.mm(dres, w["o"], out=dy)                                        # attn c_proj dX
        d4 = on_side(lambda: g["o"].addmm_(dres.t(), a["y"]))
        before_write("dqkv")
        attn_bwd()
        torch.mm(dqkv, w["qkv"], out=dln)                                     # c_attn dX
        d6 = on_side(lambda: (g["qkv"].addmm_(dqkv.t(), a["ln1"]), g["bqkv"].add_(dqkv.sum(0, dtype=torch.float32))))
        if d6 is not None: pending["dqkv"] = d6
        if d4 is not None: main.wait_event(d4)                                # LN1 bwd rewrites dres
        ln_bwd()
    for d in pending.values(): main.wait_event(d)
    if two:
        e = ev(); e.record(side); main.wait_event(e)

def make_graph(two):
    s = torch.cuda.Stream(); s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        backward(two)
    torch.cuda.current_stream().wait_stream(s); torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        backward(two)
    return g

def sustained(g, seconds):
    t_end = time.time() + seconds; ts = []
    while time.time() < t_end:
        e0 = torch.cuda.Event(enable_timing=True); e1 = torch.cuda.Event(enable_timing=True)
        e0.record(); g.replay(); e1.record(); e1.synchronize(); ts.append(e0.elapsed_time(e1))
    ts.sort(); return ts[len(ts) // 2], len(ts)

gs, gt = make_graph(False), make_graph(True)
secs = float(sys.argv[1]) if len(sys.argv) > 1 else 4
for name, g in [("serial", gs), ("two streams", gt), ("serial", gs), ("two streams", gt)]:
    ms, n = sustained(g, secs)
    print(f"{name:12s} backward emulation {ms:7.3f} ms  ({n} replays)", flush=True)
