"""EMATeacher: manual loop, integer buffers, warm-up, wrappers (DDP, compile), resume."""

from __future__ import annotations

import io
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from samrefine.ema import EMATeacher, unwrap_model


class WindowAttention(nn.Module):
    """A Swin-style block holding a persistent int64 relative_position_index, as LAVT's does."""

    def __init__(self, window: int = 12, dim: int = 8) -> None:
        super().__init__()
        self.table = nn.Parameter(torch.randn((2 * window - 1) ** 2, 1) * 0.02)
        coords = torch.stack(
            torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
        )
        flat = coords.flatten(1)
        rel = (flat[:, :, None] - flat[:, None, :]).permute(1, 2, 0) + (window - 1)
        index = rel[..., 0] * (2 * window - 1) + rel[..., 1]
        self.register_buffer("relative_position_index", index)  # int64, persistent
        self.proj = nn.Linear(dim, dim)
        self.norm = nn.BatchNorm1d(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = self.table[self.relative_position_index.view(-1)].mean()
        return self.norm(self.proj(x)) + bias


def _train_steps(model: nn.Module, opt: torch.optim.Optimizer, teacher, steps: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randn(6, 8, generator=g)
        loss = model(x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if teacher is not None:
            teacher.update(model)


def test_matches_manual_loop_and_copies_integer_buffers():
    torch.manual_seed(0)
    student = WindowAttention()
    teacher = EMATeacher(student, decay=0.9)
    manual = {k: v.detach().clone().double() for k, v in student.state_dict().items()}
    opt = torch.optim.SGD(student.parameters(), lr=0.5)
    for step in range(4):
        _train_steps(student, opt, None, 1, seed=step)
        teacher.update(student)
        for k, v in student.state_dict().items():
            if v.is_floating_point():
                manual[k] = 0.9 * manual[k] + 0.1 * v.double()
            else:
                manual[k] = v.clone()
    got = teacher.module.state_dict()
    for k, v in manual.items():
        if got[k].is_floating_point():
            torch.testing.assert_close(got[k].double(), v, rtol=1e-6, atol=1e-7)
        else:
            assert torch.equal(got[k], v), k
    assert int(got["norm.num_batches_tracked"]) == 4
    assert teacher.step == 4


def test_integer_index_survives_where_naive_state_dict_ema_corrupts_it():
    torch.manual_seed(0)
    student = WindowAttention(window=12)
    original = student.relative_position_index.clone()
    ours = EMATeacher(student, decay=0.9996)
    naive = WindowAttention(window=12)
    naive.load_state_dict(student.state_dict())
    opt = torch.optim.SGD(student.parameters(), lr=0.1)
    keep = 0.9996
    for step in range(2):
        _train_steps(student, opt, ours, 1, seed=step)
        # The SemiRES reference: every state_dict entry averaged, then load_state_dict.
        t, s = naive.state_dict(), student.state_dict()
        naive.load_state_dict({k: keep * t[k] + (1 - keep) * s[k] for k in t})
    damaged = (naive.relative_position_index != original).sum().item()
    assert damaged > 0  # the defect the reference has (facts section 6, item 14)
    assert int(naive.norm.num_batches_tracked) == 0  # truncated average of 0 and 2
    assert torch.equal(ours.module.relative_position_index, original)
    assert int(ours.module.norm.num_batches_tracked) == 2


def test_timm_swin_relative_position_index_kept():
    pytest.importorskip("timm")
    from timm.models.swin_transformer import SwinTransformer

    torch.manual_seed(0)
    student = SwinTransformer(
        img_size=32,
        patch_size=4,
        window_size=4,
        embed_dim=16,
        depths=(1, 1),
        num_heads=(1, 2),
        num_classes=3,
    )
    before = {
        n: b.clone() for n, b in student.named_buffers() if n.endswith("relative_position_index")
    }
    assert before and all(b.dtype == torch.int64 for b in before.values())
    teacher = EMATeacher(student, decay=0.9996)
    opt = torch.optim.SGD(student.parameters(), lr=0.1)
    x = torch.randn(2, 3, 32, 32)
    student(x).sum().backward()
    opt.step()
    teacher.update(student)
    bufs = dict(teacher.module.named_buffers())
    for n, b in before.items():
        assert torch.equal(bufs[n], b), n
    out = teacher(x)
    assert out.shape == (2, 3) and not out.requires_grad


def test_warmup_decay_schedule():
    student = nn.Linear(3, 2)
    teacher = EMATeacher(student, decay=0.9, warmup=True)
    seen = []
    for _ in range(13):
        seen.append(teacher.current_decay())
        with torch.no_grad():
            student.weight.add_(1.0)
        teacher.update(student)
        if len(seen) == 1:
            # decay 0 at the first update: the teacher is the student.
            assert torch.equal(teacher.module.weight, student.weight)
    expected = [min(1 - 1 / (t + 1), 0.9) for t in range(13)]
    assert seen == pytest.approx(expected, abs=1e-15)
    assert seen[-1] == 0.9 and seen[2] == pytest.approx(2 / 3)


def test_teacher_is_frozen_eval_and_no_grad():
    student = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5))
    teacher = EMATeacher(student)
    assert not teacher.module.training
    assert not any(p.requires_grad for p in teacher.module.parameters())
    x = torch.randn(3, 4, requires_grad=True)
    out = teacher(x)
    assert not out.requires_grad
    torch.testing.assert_close(out, teacher(x))  # dropout off: deterministic
    assert student.training  # the student is untouched


def test_compiled_and_dataparallel_students_are_unwrapped():
    base = nn.Linear(3, 3)
    compiled = torch.compile(base)
    assert unwrap_model(compiled) is base
    assert unwrap_model(nn.DataParallel(base)) is base
    teacher = EMATeacher(compiled, decay=0.5)
    assert isinstance(teacher.module, nn.Linear)
    with torch.no_grad():
        base.bias.add_(2.0)
    teacher.update(compiled)
    torch.testing.assert_close(teacher.module.bias, base.bias - 1.0)


def test_resume_equals_uninterrupted():
    def fresh():
        torch.manual_seed(3)
        s = WindowAttention(window=4)
        return s, torch.optim.AdamW(s.parameters(), lr=1e-2), None

    s1, o1, _ = fresh()
    t1 = EMATeacher(s1, decay=0.99, warmup=True)
    _train_steps(s1, o1, t1, 6, seed=10)

    s2, o2, _ = fresh()
    t2 = EMATeacher(s2, decay=0.99, warmup=True)
    _train_steps(s2, o2, t2, 3, seed=10)
    buf = io.BytesIO()
    torch.save(
        {"student": s2.state_dict(), "opt": o2.state_dict(), "teacher": t2.state_dict()}, buf
    )
    buf.seek(0)
    ckpt = torch.load(buf, weights_only=True)
    s3, o3, _ = fresh()
    t3 = EMATeacher(s3, decay=0.5)  # settings come back from the checkpoint
    s3.load_state_dict(ckpt["student"])
    o3.load_state_dict(ckpt["opt"])
    t3.load_state_dict(ckpt["teacher"])
    assert (t3.step, t3.decay, t3.warmup) == (3, 0.99, True)
    # Same data stream as the uninterrupted run's steps 4..6.
    g = torch.Generator().manual_seed(10)
    for _ in range(3):
        torch.randn(6, 8, generator=g)
    for _ in range(3):
        x = torch.randn(6, 8, generator=g)
        loss = s3(x).pow(2).mean()
        o3.zero_grad()
        loss.backward()
        o3.step()
        t3.update(s3)
    t1_state, t3_state = t1.module.state_dict(), t3.module.state_dict()
    assert list(t1_state) == list(t3_state)
    for k, a in t1_state.items():
        b = t3_state[k]
        assert torch.equal(a, b), k


def test_update_reaches_buffers_replaced_by_module_apply():
    # Module.to()/.cuda() assign new buffer objects; the teacher must follow them.
    student = WindowAttention(window=3)
    teacher = EMATeacher(student, decay=0.5)
    teacher.module._apply(lambda t: t.clone())
    with torch.no_grad():
        student.relative_position_index.add_(1)
        student.norm.running_mean.fill_(4.0)
    teacher.update(student)
    assert torch.equal(teacher.module.relative_position_index, student.relative_position_index)
    torch.testing.assert_close(teacher.module.norm.running_mean, torch.full((8,), 2.0))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_update_matches_cpu():
    torch.manual_seed(0)
    cpu_student = WindowAttention(window=4)
    gpu_student = WindowAttention(window=4).cuda()
    gpu_student.load_state_dict(cpu_student.state_dict())
    t_cpu, t_gpu = EMATeacher(cpu_student, 0.9), EMATeacher(gpu_student, 0.9)
    with torch.no_grad():
        for s in (cpu_student, gpu_student):
            s.table.add_(1.0)
            s.relative_position_index.add_(2)
    t_cpu.update(cpu_student)
    t_gpu.update(gpu_student)
    for (k, a), b in zip(
        t_cpu.module.state_dict().items(), t_gpu.module.state_dict().values(), strict=True
    ):
        assert b.is_cuda
        torch.testing.assert_close(b.cpu(), a, msg=k)


def test_errors():
    with pytest.raises(ValueError, match="decay"):
        EMATeacher(nn.Linear(2, 2), decay=1.5)
    with pytest.raises(TypeError, match=r"nn\.Module"):
        EMATeacher(object())
    teacher = EMATeacher(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="same architecture"):
        teacher.update(nn.Sequential(nn.Linear(2, 2)))
    with pytest.raises(ValueError, match="teacher has"):
        teacher.update(nn.Linear(2, 2).double())
    with pytest.raises(ValueError, match=r"EMATeacher\.state_dict"):
        teacher.load_state_dict(nn.Linear(2, 2).state_dict())


# ----------------------------------------------------------------------------------- DDP


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, out_dir: str) -> None:
    import torch.distributed as dist

    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    try:
        torch.manual_seed(0)  # same initial weights on both ranks
        student = WindowAttention(window=4)
        ddp = nn.parallel.DistributedDataParallel(student)
        teacher = EMATeacher(ddp, decay=0.8)
        manual = {k: v.detach().clone().double() for k, v in student.state_dict().items()}
        opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
        g = torch.Generator().manual_seed(100 + rank)  # different data per rank
        for _ in range(3):
            loss = ddp(torch.randn(4, 8, generator=g)).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            teacher.update(ddp)
            for k, v in student.state_dict().items():
                if v.is_floating_point():
                    manual[k] = 0.8 * manual[k] + 0.2 * v.double()
                else:
                    manual[k] = v.clone()
        torch.save(
            {"teacher": teacher.module.state_dict(), "manual": manual},
            os.path.join(out_dir, f"rank{rank}.pt"),
        )
    finally:
        dist.destroy_process_group()


def test_ddp_two_processes(tmp_path):
    port = _free_port()
    mp.spawn(_ddp_worker, args=(2, port, str(tmp_path)), nprocs=2, join=True)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    for r in (r0, r1):
        for k, v in r["manual"].items():
            t = r["teacher"][k]
            if t.is_floating_point():
                torch.testing.assert_close(t.double(), v, rtol=1e-6, atol=1e-7)
            else:
                assert torch.equal(t, v), k
    # Parameters are synchronised by DDP, so both ranks hold the same teacher weights.
    for k in ("table", "proj.weight", "proj.bias", "relative_position_index"):
        assert torch.equal(r0["teacher"][k], r1["teacher"][k]), k
    # BatchNorm statistics are per rank (no SyncBatchNorm) and differ.
    assert not torch.equal(r0["teacher"]["norm.running_mean"], r1["teacher"]["norm.running_mean"])
