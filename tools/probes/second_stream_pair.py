# Run on the GPU machine: python3 tools/probes/second_stream_pair.py (docs/performance.md, "Twelfth session").
# Does running weight-gradient work (dW GEMM, bias column sum) on a second stream overlap the
# critical path (dX GEMM, memory-bound passes) on an H100? Times serial vs two-stream, in CUDA graphs.
import torch
torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction = False
dev = "cuda"
N, E, F = 32768, 768, 3072
bf = torch.bfloat16
dpre = torch.randn(N, F, device=dev, dtype=bf)
x = torch.randn(N, E, device=dev, dtype=bf)
w = torch.randn(F, E, device=dev, dtype=bf)
dw = torch.zeros(F, E, device=dev, dtype=torch.float32)
db = torch.zeros(F, device=dev, dtype=torch.float32)
dx = torch.empty(N, E, device=dev, dtype=bf)
a = torch.randn(N, E, device=dev, dtype=bf); b = torch.randn(N, E, device=dev, dtype=bf)
c = torch.empty(N, E, device=dev, dtype=bf)
big1 = torch.randn(4 * N, E, device=dev, dtype=bf); big2 = torch.empty_like(big1)
side = torch.cuda.Stream(priority=0)
side_hi = torch.cuda.Stream(priority=-1)

def crit():
    torch.mm(dpre, w, out=dx)                 # dX of c_fc
    torch.add(a, b, out=c)                    # a memory-bound pass (LN-like)
    big2.copy_(big1)                          # another memory-bound pass (~200 MB)
def offpath():
    torch.matmul(dpre.t(), x, out=dwb)       # dW of c_fc
    torch.sum(dpre, dim=0, dtype=torch.float32, out=db)   # its bias gradient
dwb = torch.empty(F, E, device=dev, dtype=bf)

def serial():
    crit(); offpath()
def two(stream):
    def f():
        cur = torch.cuda.current_stream()
        stream.wait_stream(cur)
        with torch.cuda.stream(stream):
            offpath()
        crit()
        cur.wait_stream(stream)
    return f

def graph_time(fn, reps=20, inner=10):
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3): fn()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for _ in range(inner): fn()
    for _ in range(5): g.replay()
    torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        e0 = torch.cuda.Event(enable_timing=True); e1 = torch.cuda.Event(enable_timing=True)
        e0.record(); g.replay(); e1.record(); torch.cuda.synchronize()
        ts.append(e0.elapsed_time(e1) / inner)
    ts.sort(); return ts[len(ts) // 2]

for name, fn in [("crit only", crit), ("offpath only", offpath), ("serial", serial),
                 ("two streams", two(side)), ("two streams, side high prio", two(side_hi)),
                 ("serial again", serial)]:
    print(f"{name:32s} {graph_time(fn):.4f} ms")
