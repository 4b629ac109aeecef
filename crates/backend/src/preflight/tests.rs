use pretty_assertions::assert_eq;

use super::*;
use crate::docker::runtime::{Registered, RuntimeChoice};

fn good() -> NativeFacts {
    NativeFacts {
        is_linux: true,
        is_root: false,
        max_user_namespaces: Some(15000),
        apparmor_restrict_userns: None,
        unprivileged_userns_clone: None,
        container: None,
        seccomp: true,
        landlock_abi: 6,
        probe: Some(Ok("a test bottle ran".into())),
        cgroups: Some(Ok("cgroup v2: /sys/fs/cgroup/bot-bottle/<bottle>".into())),
    }
}

#[test]
fn healthy_native_is_usable() {
    let status = diagnose_native(&good());
    assert!(status.usable);
    assert_eq!(
        status.line(),
        "native: usable (user namespaces, seccomp, landlock ABI 6, cgroup v2: /sys/fs/cgroup/bot-bottle/<bottle>, a test bottle ran)"
    );
}

#[test]
fn apparmor_restriction_names_the_sysctl() {
    let f = NativeFacts {
        apparmor_restrict_userns: Some(1),
        probe: Some(Err(
            "could not set up the bottle (namespaces): unshare: EPERM".into(),
        )),
        ..good()
    };
    let status = diagnose_native(&f);
    assert!(!status.usable);
    assert_eq!(
        status.line(),
        "native: not usable: AppArmor restricts unprivileged user namespaces (kernel.apparmor_restrict_unprivileged_userns=1); fix: sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0, or add an AppArmor profile granting `userns` to bot-bottle; a test bottle failed: could not set up the bottle (namespaces): unshare: EPERM; fix: see the error above; `unshare -Urmpnf --mount-proc true` shows whether the kernel allows these namespaces"
    );
}

#[test]
fn apparmor_restriction_does_not_apply_to_root() {
    let f = NativeFacts {
        is_root: true,
        apparmor_restrict_userns: Some(1),
        ..good()
    };
    assert!(diagnose_native(&f).usable);
}

#[test]
fn zero_user_namespaces_is_fatal_even_for_root() {
    let f = NativeFacts {
        is_root: true,
        max_user_namespaces: Some(0),
        ..good()
    };
    let status = diagnose_native(&f);
    assert!(!status.usable);
    assert_eq!(
        status.checks[0].fix.as_deref(),
        Some("sudo sysctl -w user.max_user_namespaces=15000 (persist it in /etc/sysctl.d/)")
    );
}

#[test]
fn container_probe_failure_explains_nesting() {
    let f = NativeFacts {
        container: Some("/.dockerenv exists".into()),
        probe: Some(Err("mount proc: EPERM".into())),
        ..good()
    };
    let status = diagnose_native(&f);
    assert!(!status.usable);
    assert!(
        status
            .line()
            .contains("this looks like a container (/.dockerenv exists)")
    );
}

#[test]
fn missing_landlock_is_a_warning() {
    let f = NativeFacts {
        landlock_abi: -1,
        ..good()
    };
    let status = diagnose_native(&f);
    assert!(status.usable);
    assert_eq!(
        status.line(),
        "native: usable (user namespaces, seccomp, cgroup v2: /sys/fs/cgroup/bot-bottle/<bottle>, a test bottle ran); warning: Landlock is not available; bottles run without this extra layer (fix: boot a kernel >= 5.13 with `landlock` in the lsm= list (e.g. lsm=landlock,lockdown,yama,apparmor))"
    );
}

#[test]
fn unenforceable_limits_make_native_unusable_with_the_fix() {
    let f = NativeFacts {
        cgroups: Some(Err(crate::native::cgroup::CgroupError {
            found: "no cgroup v2 mount; no cgroup v1 hierarchy for pids".into(),
            fix: "mount them".into(),
        })),
        ..good()
    };
    let status = diagnose_native(&f);
    assert!(!status.usable);
    assert_eq!(
        status.checks.iter().find(|c| c.name == "resource limits"),
        Some(&Check {
            name: "resource limits".into(),
            ok: false,
            detail: "bottles cannot get cpu, memory and pids limits here: no cgroup v2 \
                     mount; no cgroup v1 hierarchy for pids"
                .into(),
            fix: Some(
                "mount them, or set `resources: {dangerously_allow_unenforced: true}` in \
                 the bottle to start without limits"
                    .into()
            ),
            required: true,
        })
    );
}

#[test]
fn missing_seccomp_is_fatal() {
    let f = NativeFacts {
        seccomp: false,
        ..good()
    };
    assert!(!diagnose_native(&f).usable);
}

#[test]
fn docker_lines() {
    let none = diagnose_docker(&DockerFacts {
        socket: "/var/run/docker.sock".into(),
        ..DockerFacts::default()
    });
    assert_eq!(
        none.line(),
        "docker: not usable: docker is not installed; fix: sudo apt-get install docker.io; dockerd is not running (no socket at /var/run/docker.sock); fix: sudo systemctl start docker, or point DOCKER_HOST at its socket; this build of bot-bottle has no docker backend yet; fix: use --backend native"
    );
    let facts = |runtimes: &[(&str, &[&str])], choice: RuntimeChoice| DockerFacts {
        cli: Some("/usr/bin/docker".into()),
        socket: "/var/run/docker.sock".into(),
        daemon: Some(true),
        built: true,
        runtimes: runtimes
            .iter()
            .map(|(name, args)| {
                (
                    (*name).to_owned(),
                    Registered {
                        path: format!("/usr/bin/{name}"),
                        args: args.iter().map(|a| (*a).to_owned()).collect(),
                    },
                )
            })
            .collect(),
        default_runtime: "runc".into(),
        choice,
    };
    let gvisor: &[(&str, &[&str])] = &[("runc", &[]), ("runsc", &["--network=host"])];
    assert_eq!(
        diagnose_docker(&facts(gvisor, RuntimeChoice::Auto)).line(),
        "docker: usable (docker at /usr/bin/docker, dockerd running, runtime runsc (gVisor))"
    );
    assert_eq!(
        diagnose_docker(&facts(gvisor, RuntimeChoice::Named("runc".into()))).line(),
        "docker: usable (docker at /usr/bin/docker, dockerd running, runtime runc (BOT_BOTTLE_DOCKER_RUNTIME=runc)); warning: gVisor (runsc) is registered but BOT_BOTTLE_DOCKER_RUNTIME=runc opts out of it: the agent shares the host's kernel (fix: unset BOT_BOTTLE_DOCKER_RUNTIME to run agents under gVisor)"
    );
    assert_eq!(
        diagnose_docker(&facts(&[("runc", &[])], RuntimeChoice::Auto)).line(),
        "docker: usable (docker at /usr/bin/docker, dockerd running, runtime runc (the daemon's default)); warning: gVisor (runsc) is not registered with dockerd; bottles use the daemon's default runtime (fix: sudo apt-get install runsc, add {\"runtimes\": {\"runsc\": {\"path\": \"/usr/bin/runsc\", \"runtimeArgs\": [\"--network=host\"]}}} to /etc/docker/daemon.json and reload dockerd (sudo kill -HUP $(pidof dockerd)); scripts/docker/start-dockerd does both)"
    );
    assert_eq!(
        diagnose_docker(&facts(
            &[("runc", &[]), ("runsc", &[])],
            RuntimeChoice::Auto
        ))
        .line(),
        "docker: usable (docker at /usr/bin/docker, dockerd running, runtime runc (the daemon's default)); warning: gVisor (runsc) is registered with --network=sandbox, where its own network stack would bypass the bottle's firewall; bottles use the daemon's default runtime (fix: add \"runtimeArgs\": [\"--network=host\"] to runsc in /etc/docker/daemon.json and reload dockerd (sudo kill -HUP $(pidof dockerd)))"
    );
    // Asked for by name, a gVisor the firewall does not cover is refused (fail closed).
    assert_eq!(
        diagnose_docker(&facts(
            &[("runc", &[]), ("runsc", &[])],
            RuntimeChoice::Named("runsc".into())
        ))
        .line(),
        "docker: not usable: BOT_BOTTLE_DOCKER_RUNTIME names `runsc` (gVisor), registered with --network=sandbox: gVisor's own network stack would send the agent's packets past the bottle's firewall; fix: add \"runtimeArgs\": [\"--network=host\"] to `runsc` in /etc/docker/daemon.json and reload dockerd (sudo kill -HUP $(pidof dockerd)), or set BOT_BOTTLE_DOCKER_RUNTIME=runc"
    );
}

#[test]
fn smolmachines_and_apple_lines() {
    let smol = diagnose_smolmachines(&SmolFacts {
        is_linux: true,
        smolvm: None,
        kvm: None,
        built: true,
    });
    assert_eq!(
        smol.line(),
        "smolmachines: not usable: smolvm not found on PATH; fix: install smolvm and make sure `smolvm` is on PATH; /dev/kvm is missing; fix: enable hardware virtualization (VT-x/AMD-V, or nested virtualization in a VM) and load kvm_intel or kvm_amd"
    );
    assert_eq!(
        diagnose_apple(false, None).line(),
        "apple: not usable: only available on macOS; fix: use --backend native on Linux"
    );
}
