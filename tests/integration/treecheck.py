"""Checks that a mounted tree shows exactly a reference tree, using the tools
users use: find, ls, stat, cmp, md5sum, cp -r, rsync -a (twice), du."""

import hashlib
import os
import re
import subprocess


def reference_entries(ref):
    """Relative paths of every directory and file under ref, sorted."""
    out = []
    for root, dirs, files in os.walk(ref):
        rel = os.path.relpath(root, ref)
        for name in dirs + files:
            out.append(os.path.normpath(os.path.join(rel, name)))
    return sorted(out)


def md5(path):
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def check_tree(tc, ref, mnt, mtimes=None, work=None):
    """tc: a unittest.TestCase. mtimes: {relpath: mtime_ns} expected for files
    (default: the reference's own). work: a scratch directory."""
    want = reference_entries(ref)

    # find
    r = subprocess.run(["find", mnt, "-mindepth", "1", "-printf", "%P\\n"],
                       capture_output=True, check=True)
    got = sorted(p.decode("utf-8", "surrogateescape") for p in r.stdout.splitlines())
    tc.assertEqual(got, want, "find of the mount differs from the reference")

    # ls -la of every directory: names, types and sizes
    for root, dirs, files in os.walk(ref):
        rel = os.path.relpath(root, ref)
        listing = subprocess.run(["ls", "-la", "--time-style=+%s", os.path.join(mnt, rel)],
                                 capture_output=True, check=True, text=True).stdout
        names = set()
        for line in listing.splitlines()[1:]:
            parts = line.split(None, 6)
            if len(parts) == 7 and parts[6] not in (".", ".."):
                names.add(parts[6])
                full = os.path.join(root, parts[6])
                if os.path.isfile(full):
                    tc.assertTrue(parts[0].startswith("-"), line)
                    tc.assertEqual(int(parts[4]), os.path.getsize(full), line)
                else:
                    tc.assertTrue(parts[0].startswith("d"), line)
        tc.assertEqual(names, set(dirs + files), "ls -la %s" % rel)

    # stat and content of every file
    for rel in want:
        src = os.path.join(ref, rel)
        dst = os.path.join(mnt, rel)
        if os.path.isdir(src):
            tc.assertTrue(os.path.isdir(dst), rel)
            continue
        st_ref, st = os.stat(src), os.stat(dst)
        tc.assertEqual(st.st_size, st_ref.st_size, rel)
        tc.assertEqual(st.st_blocks, (st_ref.st_size + 511) // 512, rel)
        expected_mtime = mtimes[rel] if mtimes is not None else st_ref.st_mtime_ns
        tc.assertEqual(st.st_mtime_ns, expected_mtime, "mtime of " + rel)
        fmt = subprocess.run(["stat", "-c", "%s %F", dst], capture_output=True, text=True,
                             check=True).stdout.split(None, 1)
        tc.assertEqual(int(fmt[0]), st_ref.st_size)
        tc.assertIn("regular", fmt[1])
        subprocess.run(["cmp", src, dst], check=True)
        tc.assertEqual(md5(dst), md5(src), rel)

    if work is None:
        return
    # cp -r, then compare whole trees
    copy = os.path.join(work, "cp")
    subprocess.run(["cp", "-r", mnt, copy], check=True)
    subprocess.run(["diff", "-r", ref, copy], check=True)

    # rsync -a twice: the second run transfers nothing
    dst = os.path.join(work, "rsync")
    subprocess.run(["rsync", "-a", mnt + "/", dst + "/"], check=True)
    subprocess.run(["diff", "-r", ref, dst], check=True)
    again = subprocess.run(["rsync", "-a", "--stats", mnt + "/", dst + "/"],
                           capture_output=True, text=True, check=True).stdout
    m = re.search(r"Number of regular files transferred: ([\d,]+)", again)
    tc.assertIsNotNone(m, again)
    tc.assertEqual(m.group(1), "0", "second rsync -a copied files:\n" + again)

    # du: the mount's apparent size is the reference's
    def du(path):
        out = subprocess.run(["du", "-s", "-b", path], capture_output=True, text=True,
                             check=True).stdout
        return int(out.split()[0])
    files_total = sum(os.path.getsize(os.path.join(ref, p)) for p in want
                      if os.path.isfile(os.path.join(ref, p)))
    tc.assertEqual(du(mnt) - du_dirs(mnt), files_total)


def du_dirs(path):
    """Apparent size du counts for the directories themselves (0 on zipperfs,
    but count them honestly)."""
    total = os.stat(path).st_size
    for root, dirs, _ in os.walk(path):
        for d in dirs:
            total += os.stat(os.path.join(root, d)).st_size
    return total


def make_tree(base, big_size=20 << 20, seed=1):
    """A varied tree: nesting, an empty directory, unicode and spaces, a
    zero-byte file, a 255-byte name, a large random file."""
    import random
    rnd = random.Random(seed)
    os.makedirs(os.path.join(base, "data", "run 1", "lane_01"))
    os.makedirs(os.path.join(base, "data", "run 2"))
    os.makedirs(os.path.join(base, "empty"))
    os.makedirs(os.path.join(base, "ünïcödé", "子目录"))
    files = {
        "README.txt": b"a demo tree\n",
        "zero.bin": b"",
        "data/run 1/lane_01/sample_R1.fastq.gz": rnd.randbytes(300000),
        "data/run 1/lane_01/sample_R2.fastq.gz": rnd.randbytes(300001),
        "data/run 1/notes with spaces.txt": b"spaces\n",
        "data/run 2/calls.vcf": rnd.randbytes(12345),
        "ünïcödé/子目录/文件.txt": "unicode ✓\n".encode(),
        "n" * 255: b"long name\n",
        "data/big.bam": rnd.randbytes(big_size),
    }
    for rel, data in files.items():
        with open(os.path.join(base, rel), "wb") as f:
            f.write(data)
    for i in range(40):
        with open(os.path.join(base, "data", "run 2", "part-%03d.txt" % i), "wb") as f:
            f.write(rnd.randbytes(rnd.randrange(0, 5000)))
    return files
