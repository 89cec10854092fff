"""The compiled matrix product of the numba implementation: C = A W over weights packed into panels.

Written the way BLIS writes a GEMM: a register-tile micro-kernel in LLVM IR (:func:`tile`) and the
loops around it in numba (:func:`gemm`), with the block sizes from the running CPU
(:mod:`rnn_xp._fast._cpu`) passed in as compile-time constants.

Layout. W is packed into panels, ``(panels, K, NR)``, C-contiguous: panel q holds NR = V SIMD
vectors of consecutive output columns, row k of the panel after row k-1, so a micro-kernel streams
it (a product may use a range of its rows). A is (R, K) with contiguous rows (the rows of a batch:
states or inputs), C is (R, >= panels*NR) with contiguous rows.

Arithmetic. Every output element is one chain of fused multiply-adds over k = 0 .. K-1 in order,
starting from 0 (and with ``add``, added to C at the end): blocking over k stores the partial sum in
C and the next block continues the same chain from it (a float stored and loaded is unchanged). So
an element's value does not depend on the tile shape, the block sizes, the SIMD width, the rows
beside it or the thread that computes it: a sequence gives the same bits alone or at any place in
any batch (the reproducibility guarantee).

Loops. ``tall`` (R >= MR/2 rows): for each panel, for each block of KC values of k (so the block of
the panel, KC x NR, stays in L1), for each tile of MR rows: MR x V accumulators in registers, each
weight vector loaded serves MR rows. ``wide`` (fewer rows, batch 1 among them): no blocking (A is
a few rows), NPW panels at once so that enough independent chains hide the FMA latency.
"""

from __future__ import annotations

from contextlib import contextmanager

from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

# not inlined: each block shape is compiled once and shared by the kernels (inlining it at every call site
# multiplied a kernel's compile time)
_GEMM = {"error_model": "numpy", "fastmath": {"contract"}, "_nrt": False, "nogil": True}


def _fma_function(builder, ty):
    """llvm.fma for a vector of floats or doubles: one rounding, whatever the hardware."""
    suffix = f"v{ty.count}f{32 if isinstance(ty.element, ir.FloatType) else 64}"
    return cgutils.get_or_insert_function(builder.module, ir.FunctionType(ty, [ty, ty, ty]), "llvm.fma." + suffix)


@contextmanager
def _counted_loop(builder, count):
    """for k in range(count), its body kept as written: LLVM is told not to unroll or interleave it.

    Unrolled (LLVM's default for such a loop), the tile's broadcasts of two iterations are live at
    once and spill the accumulators to the stack (measured: half the speed).
    """
    i64 = ir.IntType(64)
    pre = builder.block
    head = builder.append_basic_block("k.head")
    body = builder.append_basic_block("k.body")
    done = builder.append_basic_block("k.done")
    builder.branch(head)
    builder.position_at_end(head)
    k = builder.phi(i64)
    k.add_incoming(ir.Constant(i64, 0), pre)
    builder.cbranch(builder.icmp_signed("<", k, count), body, done)
    builder.position_at_end(body)
    yield k
    nxt = builder.add(k, ir.Constant(i64, 1))
    k.add_incoming(nxt, builder.block)
    latch = builder.branch(head)
    latch.set_metadata("llvm.loop", _no_unroll(builder.module))
    builder.position_at_end(done)


def _no_unroll(module):
    """A loop ID (a node that refers to itself) with llvm.loop.unroll.disable and no interleaving."""
    node = module.add_metadata([])
    hints = [
        module.add_metadata([ir.MetaDataString(module, "llvm.loop.unroll.disable")]),
        module.add_metadata([ir.MetaDataString(module, "llvm.loop.interleave.count"), ir.Constant(ir.IntType(32), 1)]),
    ]
    node.operands = (node, *hints)
    return node


CONTINUE, FRESH, ADD = 0, 1, 2  # a tile's accumulators: from C, from 0, from 0 and added to C at the end


def _literal(ty, name):
    if not isinstance(ty, types.IntegerLiteral):
        raise TypeError(f"tile(): {name} must be a compile-time integer constant, got {ty}")
    return ty.literal_value


@intrinsic(prefer_literal=True)
def tile(typingctx, W, A, C, w0, a0, c0, ps, lda, ldc, m, kn, mode, MR, NPAN, V, VB):
    """One register tile: C[c0 + r*ldc + q*NR + j] (=|+=) sum of A[a0 + r*lda + k] W[w0 + q*ps + k*NR + j], k < kn.

    r < m rows (at run time, m is MR or a power of two below it: :func:`_tile_rows`), q < NPAN panels
    (ps elements apart), j < NR = V vectors of VB bytes. ``mode``: FRESH, the accumulators start at 0;
    CONTINUE, from C (the chain of the previous k block goes on); ADD, at 0, and C + the sum is stored.
    MR, NPAN, V and VB are compile-time constants: each row count is a function of the module
    (:func:`_tile_function`).
    """
    mr, npan, nv, vb = (_literal(t, n) for t, n in ((MR, "MR"), (NPAN, "NPAN"), (V, "V"), (VB, "VB")))
    sig = types.void(W, A, C, w0, a0, c0, ps, lda, ldc, m, kn, mode, MR, NPAN, V, VB)

    def codegen(context, builder, signature, args):
        wty = signature.args[0]
        ptrs = [context.make_array(signature.args[i])(context, builder, args[i]).data for i in range(3)]
        i64 = ir.IntType(64)
        ints = [context.cast(builder, args[i], signature.args[i], types.int64) for i in range(3, 11)]
        mode = builder.trunc(context.cast(builder, args[11], signature.args[11], types.int64), ir.IntType(8))
        m = ints[6]
        end = builder.append_basic_block("tile.end")
        switch = builder.switch(m, end)
        for rows in _tile_rows(mr):
            block = builder.append_basic_block(f"tile.m{rows}")
            switch.add_case(ir.Constant(i64, rows), block)
            builder.position_at_end(block)
            fn = _tile_function(builder.module, context.get_data_type(wty.dtype), wty.dtype, rows, npan, nv, vb)
            builder.call(fn, [*ptrs, *ints[:6], ints[7], mode])
            builder.branch(end)
        builder.position_at_end(end)
        return context.get_dummy_value()

    return sig, codegen


def _tile_rows(mr):
    """The row counts a tile of at most mr rows is compiled for: mr and the powers of two below it (the
    rows of a batch go mr at a time, the rest in these: 5 functions for mr = 12 instead of 12)."""
    return sorted({mr, *(1 << i for i in range(mr.bit_length()) if (1 << i) < mr)})


@njit(inline="always")
def _next_rows(left, mr):
    """Rows of the next tile when ``left`` rows remain: mr, else the largest power of two <= left."""
    if left >= mr:
        return mr
    m = 1
    while 2 * m <= left:
        m *= 2
    return m


def _tile_function(module, elt, dtype, rows, npan, nv, vb):
    """The tile of ``rows`` rows x npan panels x nv vectors as a function of the module, defined on first use.

    One definition per module whatever the number of call sites (each gemm site has a tile per row
    count: emitted inline, they made LLVM's optimisation most of a kernel's compile time); ``noinline``
    keeps it so, for a call per tile (~5 ns) against a tile's thousands of multiply-adds.
    """
    lanes = vb // (4 if dtype == types.float32 else 8)
    name = f"rnn_xp_tile_{'f32' if dtype == types.float32 else 'f64'}_{rows}x{npan}x{nv}x{vb}"
    fn = module.globals.get(name)
    if fn is not None:
        return fn
    i64, i32, i8 = ir.IntType(64), ir.IntType(32), ir.IntType(8)
    ptr = elt.as_pointer()
    fnty = ir.FunctionType(ir.VoidType(), [ptr, ptr, ptr] + [i64] * 7 + [i8])
    fn = ir.Function(module, fnty, name)
    fn.linkage = "internal"
    fn.attributes.add("noinline")
    fn.attributes.add("nounwind")
    Wd, Ad, Cd, w0_, a0_, c0_, ps_, lda_, ldc_, kn_, mode = fn.args
    builder = ir.IRBuilder(fn.append_basic_block("entry"))
    nr = nv * lanes
    vec = ir.VectorType(elt, lanes)
    fma = _fma_function(builder, vec)
    zero = ir.Constant(vec, [0.0] * lanes)
    undef = ir.Constant(vec, ir.Undefined)
    splat = ir.Constant(ir.VectorType(i32, lanes), [0] * lanes)

    def c64(v):
        return ir.Constant(i64, v)

    def vptr(base, offset):
        return builder.bitcast(builder.gep(base, [offset]), vec.as_pointer())

    # rows * npan * nv accumulators, which LLVM keeps in registers
    accs = [[[cgutils.alloca_once(builder, vec) for _ in range(nv)] for _ in range(npan)] for _ in range(rows)]
    cbase = [builder.add(c0_, builder.mul(c64(r), ldc_)) for r in range(rows)]
    abase = [builder.add(a0_, builder.mul(c64(r), lda_)) for r in range(rows)]
    with builder.if_else(builder.icmp_unsigned("!=", mode, ir.Constant(i8, CONTINUE))) as (then, otherwise):
        with then:
            for r in range(rows):
                for q in range(npan):
                    for j in range(nv):
                        builder.store(zero, accs[r][q][j])
        with otherwise:  # the chain of the previous block of k goes on
            for r in range(rows):
                for q in range(npan):
                    for j in range(nv):
                        off = builder.add(cbase[r], c64(q * nr + j * lanes))
                        builder.store(builder.load(vptr(Cd, off), align=1), accs[r][q][j])
    wq = [builder.add(w0_, builder.mul(c64(q), ps_)) for q in range(npan)]
    with _counted_loop(builder, kn_) as k:
        krow = builder.mul(k, c64(nr))
        ws = [
            [builder.load(vptr(Wd, builder.add(wq[q], builder.add(krow, c64(j * lanes)))), align=1) for j in range(nv)]
            for q in range(npan)
        ]
        for r in range(rows):  # one broadcast live at a time: its row's accumulators, then the next
            a = builder.load(builder.gep(Ad, [builder.add(abase[r], k)]))
            b = builder.shuffle_vector(builder.insert_element(undef, a, ir.Constant(i32, 0)), undef, splat)
            for q in range(npan):
                for j in range(nv):
                    acc = accs[r][q][j]
                    builder.store(builder.call(fma, [b, ws[q][j], builder.load(acc)]), acc)
    add = builder.icmp_unsigned("==", mode, ir.Constant(i8, ADD))
    for r in range(rows):
        for q in range(npan):
            for j in range(nv):
                off = builder.add(cbase[r], c64(q * nr + j * lanes))
                total = builder.load(accs[r][q][j])
                added = builder.fadd(builder.load(vptr(Cd, off), align=1), total)  # one rounding, no contraction
                builder.store(builder.select(add, added, total), vptr(Cd, off), align=1)
    builder.ret_void()
    return fn


@njit(**_GEMM)
def gemm(W, kw, A, C, add, MR, V, VB, KC, NPW, MRW, L2B):
    """C[:, :panels*NR] = A W[:, kw : kw+K] (with ``add``: C += A W[:, kw : kw+K]): W (panels, >= kw+K, NR) packed,
    A (R, K) and C (R, >= panels*NR) with contiguous rows.

    ``add``: each element's sum is one chain from 0 over all of K (k is not blocked), added to C once at
    the end: C + the sum, rounded once, the same bits as the sum stored and added after (a step's
    recurrent product added to its input projection, without storing it in between). At least MR/2
    rows: MR x V tiles; the rows go in near-equal blocks of about L2B bytes of A (which stay in L2
    while every panel passes over them), k in near-equal blocks of at most KC (a block of a panel is
    reused by every row tile of the row block). Fewer rows: MRW-row tiles over NPW panels at once
    (each weight is used once, and NPW * V chains of multiply-adds hide the FMA latency); NPW divides
    the panel count. The constants (MR ... L2B) make a function per block shape, compiled once per
    process and shared by every kernel that uses it.
    """
    NP, KW, NR = W.shape
    R, K = A.shape
    lda = A.strides[0] // A.itemsize
    ldc = C.strides[0] // C.itemsize
    ps = KW * NR
    w0 = kw * NR
    if 2 * R >= MR:
        # near-equal row blocks of up to 1.25x L2B bytes of A (at L2B exactly, 128 rows of 1025 floats went
        # as 126 + 2, and the 2-row block streamed every weight once more for 2 rows)
        cap = max(MR, L2B // (K * A.itemsize) // MR * MR)
        cap += cap // 4
        nrb = (R + cap - 1) // cap
        mc = ((R + nrb - 1) // nrb + MR - 1) // MR * MR
        nkb = 1 if add else (K + KC - 1) // KC
        kc = (K + nkb - 1) // nkb  # near-equal blocks: no block of a few k paying a tile's loads and stores
        for rb in range(0, R, mc):
            re = min(R, rb + mc)
            for q in range(NP):
                for k0 in range(0, K, kc):
                    kn = min(kc, K - k0)
                    mode = ADD if add else (FRESH if k0 == 0 else CONTINUE)
                    r0 = rb
                    while r0 < re:
                        m = _next_rows(re - r0, MR)
                        tile(
                            W,
                            A,
                            C,
                            w0 + q * ps + k0 * NR,
                            r0 * lda + k0,
                            r0 * ldc + q * NR,
                            ps,
                            lda,
                            ldc,
                            m,
                            kn,
                            mode,
                            MR,
                            1,
                            V,
                            VB,
                        )
                        r0 += m
        return
    mode = ADD if add else FRESH
    for q in range(0, NP, NPW):
        r0 = 0
        while r0 < R:
            m = _next_rows(R - r0, MRW)
            tile(W, A, C, w0 + q * ps, r0 * lda, r0 * ldc + q * NR, ps, lda, ldc, m, K, mode, MRW, NPW, V, VB)
            r0 += m
