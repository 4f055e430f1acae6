"""Security of the bus against the real apache2 (issue 5, scenario 9).

  - httpd's children map the bus read-only and shared (`r--s` in
    /proc/PID/maps) and cannot be made to write it: even root's
    /proc/PID/mem, which overrides page protections of private mappings,
    is refused on a shared mapping of a file opened read-only;
  - `sse-pub create --group www-data --mode 0640` gives the bus owner
    root, group www-data, mode 0640, and the wake file (the one page
    readers write) group-writable 0660, nothing more;
  - a www-data process (what an httpd child runs as) can open the bus
    read-only but not read-write, and `sse-pub publish` as www-data fails
    with a message about permissions;
  - `sse-pub create` follows no symlink: not one planted at the target
    path (with or without --force), not one at PATH.wake, and its temporary
    files are opened with O_CREAT|O_EXCL|O_NOFOLLOW (checked with strace).
"""

import grp
import os
import pwd
import re
import shutil
import stat
import subprocess
import unittest

from harness import HttpdTestCase, location, sse_pub_path, wait_for

WWW = "www-data"


def as_www_data():
    pw = pwd.getpwnam(WWW)

    def demote():
        os.setgroups([])
        os.setgid(pw.pw_gid)
        os.setuid(pw.pw_uid)
    return demote


def bus_mappings(pid, path):
    """[(start, end, perms)] of every mapping of path in process pid."""
    out = []
    with open("/proc/%d/maps" % pid) as f:
        for line in f:
            parts = line.split(None, 5)
            if len(parts) == 6 and parts[5].strip() == path:
                a, b = parts[0].split("-")
                out.append((int(a, 16), int(b, 16), parts[1]))
    return out


class MappingTest(HttpdTestCase):

    def create_bus(self):
        # world-unreadable, group www-data: as the README tells users
        os.remove(self.bus_path)
        os.remove(self.bus_path + ".wake")
        self.pub.run("create", self.bus_path, "--capacity", "1M",
                     "--group", WWW, "--mode", "0640")

    def test_httpd_maps_the_bus_read_only_and_cannot_write_it(self):
        self.create_bus()
        self.start_httpd(location("/events", self.bus_path,
                                  SSEChannel="a"))
        c = self.stream("/events")
        nid = self.pub.publish("a", "before")
        c.read_events(1)
        self.assertEqual(c.events[0].id, nid)
        kids = self.httpd.child_pids()
        mapped = {}
        wait_for(lambda: any(bus_mappings(k, self.bus_path) for k in kids),
                 10, what="a child mapping the bus")
        for k in kids:
            m = bus_mappings(k, self.bus_path)
            if m:
                mapped[k] = m
        self.assertTrue(mapped, "no httpd child maps %s" % self.bus_path)
        for pid, maps in mapped.items():
            for start, end, perms in maps:
                self.assertEqual(perms, "r--s", "child %d maps the bus %s"
                                 % (pid, perms))
            # The wake file is the one page a reader writes.
            for _, _, perms in bus_mappings(pid, self.bus_path + ".wake"):
                self.assertEqual(perms, "rw-s")
        # A write through /proc/PID/mem (root, FOLL_FORCE) into the shared
        # read-only mapping is refused by the kernel: no VM_MAYWRITE.
        before = open(self.bus_path, "rb").read(4096)
        pid, maps = next(iter(mapped.items()))
        start = maps[0][0]
        fd = os.open("/proc/%d/mem" % pid, os.O_RDWR)
        try:
            with self.assertRaises(OSError):
                os.pwrite(fd, b"\xffCORRUPT", start)
        finally:
            os.close(fd)
        self.assertEqual(open(self.bus_path, "rb").read(4096), before)
        nid = self.pub.publish("a", "after")
        c.read_events(2)
        self.assertEqual(c.events[1].id, nid)
        self.assertNoCrash()


class FileModeTest(HttpdTestCase):
    create_bus = False

    def test_create_group_www_data_mode_0640(self):
        self.pub.run("create", self.bus_path, "--capacity", "64K",
                     "--group", WWW, "--mode", "0640")
        gid = grp.getgrnam(WWW).gr_gid
        st = os.lstat(self.bus_path)
        self.assertTrue(stat.S_ISREG(st.st_mode))
        self.assertEqual(stat.S_IMODE(st.st_mode), 0o640)
        self.assertEqual(st.st_uid, os.geteuid())
        self.assertEqual(st.st_gid, gid)
        wst = os.lstat(self.bus_path + ".wake")
        self.assertTrue(stat.S_ISREG(wst.st_mode))
        self.assertEqual(stat.S_IMODE(wst.st_mode), 0o660)
        self.assertEqual(wst.st_gid, gid)
        # no temporary file left behind
        left = [n for n in os.listdir(self.tmp) if ".tmp." in n]
        self.assertEqual(left, [])

    def test_default_mode_is_0640_and_never_world_accessible(self):
        self.pub.run("create", self.bus_path, "--capacity", "64K")
        for p in (self.bus_path, self.bus_path + ".wake"):
            self.assertEqual(stat.S_IMODE(os.lstat(p).st_mode) & 0o007, 0, p)
        self.assertEqual(stat.S_IMODE(os.lstat(self.bus_path).st_mode), 0o640)

    def test_www_data_can_read_but_not_write_the_bus(self):
        self.pub.run("create", self.bus_path, "--capacity", "64K",
                     "--group", WWW, "--mode", "0640")
        self.pub.publish("a", "x")
        code = ("import os,sys\n"
                "p=sys.argv[1]\n"
                "os.close(os.open(p, os.O_RDONLY))\n"
                "for fl in (os.O_RDWR, os.O_WRONLY, os.O_WRONLY|os.O_TRUNC):\n"
                "    try:\n"
                "        os.open(p, fl); print('OPENED', fl); sys.exit(1)\n"
                "    except PermissionError:\n"
                "        pass\n"
                "print('ok')\n")
        r = subprocess.run(["python3", "-c", code, self.bus_path],
                           preexec_fn=as_www_data(), capture_output=True,
                           text=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertEqual(r.stdout.strip(), "ok")
        # www-data needs to traverse self.tmp: it is 0755 (make_tmpdir)
        r = subprocess.run([sse_pub_path(), "publish", self.bus_path,
                            "--channel", "a", "evil"],
                           preexec_fn=as_www_data(), capture_output=True,
                           text=True, timeout=30)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("ermission", r.stderr)
        # and it can follow it (read-only) like httpd does
        r = subprocess.run([sse_pub_path(), "tail", self.bus_path,
                            "--oldest", "--count", "1", "--timeout", "5"],
                           preexec_fn=as_www_data(), capture_output=True,
                           text=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("data: x", r.stdout)
        info = self.pub.info()
        self.assertEqual(info.get("head_seq"), 1, info)


class SymlinkTest(HttpdTestCase):
    create_bus = False

    def setUp(self):
        super().setUp()
        self.victim = os.path.join(self.tmp, "victim")
        with open(self.victim, "w") as f:
            f.write("precious\n")
        os.chmod(self.victim, 0o644)

    def assertVictimIntact(self):
        with open(self.victim) as f:
            self.assertEqual(f.read(), "precious\n")
        self.assertEqual(stat.S_IMODE(os.stat(self.victim).st_mode), 0o644)
        self.assertEqual(os.stat(self.victim).st_uid, os.geteuid())

    def test_symlink_at_target_is_not_followed(self):
        os.symlink(self.victim, self.bus_path)
        for extra in ([], ["--force"]):
            with self.subTest(args=extra):
                r = self.pub.run("create", self.bus_path, "--capacity", "64K",
                                 "--group", WWW, *extra, check=False)
                rc = r[0]
                self.assertNotEqual(rc, 0)
                self.assertTrue(os.path.islink(self.bus_path))
                self.assertVictimIntact()

    def test_dangling_symlink_at_target_is_not_followed(self):
        target = os.path.join(self.tmp, "created-through-link")
        os.symlink(target, self.bus_path)
        rc = self.pub.run("create", self.bus_path, "--capacity", "64K",
                          check=False)[0]
        self.assertNotEqual(rc, 0)
        self.assertFalse(os.path.exists(target))

    def test_symlink_at_wake_path_is_replaced_not_followed(self):
        os.symlink(self.victim, self.bus_path + ".wake")
        self.pub.run("create", self.bus_path, "--capacity", "64K",
                     "--group", WWW)
        self.assertVictimIntact()
        self.assertFalse(os.path.islink(self.bus_path + ".wake"))
        self.assertTrue(stat.S_ISREG(os.lstat(self.bus_path + ".wake")
                                     .st_mode))

    def test_temporary_files_are_created_exclusively_without_following(self):
        strace = shutil.which("strace")
        self.assertIsNotNone(strace, "strace is missing: "
                             "build/install-deps.sh --test installs it")
        log = os.path.join(self.tmp, "strace.log")
        subprocess.run([strace, "-f", "-qq", "-e", "trace=open,openat",
                        "-o", log, sse_pub_path(), "create", self.bus_path,
                        "--capacity", "64K", "--group", WWW],
                       check=True, capture_output=True, timeout=60)
        with open(log) as f:
            opens = [l for l in f if ".tmp." in l]
        self.assertGreaterEqual(len(opens), 2, "expected the bus's and the "
                                "wake file's temporary files: %r" % opens)
        for l in opens:
            self.assertRegex(l, r"O_CREAT", l)
            self.assertRegex(l, r"O_EXCL", l)
        bus_tmp = [l for l in opens if ".wake.tmp." not in l]
        for l in bus_tmp:
            self.assertRegex(l, r"O_NOFOLLOW", l)


if __name__ == "__main__":
    unittest.main()
