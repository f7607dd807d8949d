//! The mount namespace a container engine run by a test lives in (containerd for the CRI tests,
//! podman for the image test).

/// Shell lines to run first in `unshare -m --propagation unchanged sh -c`: every mount becomes a
/// slave, so nothing the engine, its shims or crun mount reaches the machine's mount table,
/// except `/run/netns`, which stays shared so that network namespaces mounted on either side
/// later are seen on both; and the hybrid cgroup layout's cgroup2 mount is hidden from crun,
/// which refuses hybrid mode ("drop all controllers from cgroupv2").
pub const PRIVATE_MOUNTS: &str = r#"awk '{print $5}' /proc/self/mountinfo | while read -r m; do
  case "$m" in /run/netns|/run/netns/*) ;; *) mount --make-slave "$m" 2>/dev/null || true ;; esac
done
if mountpoint -q /sys/fs/cgroup/unified; then umount /sys/fs/cgroup/unified; fi
"#;
