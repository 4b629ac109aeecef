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
        ..SmolFacts::default()
    });
    assert_eq!(
        smol.line(),
        "smolmachines: not usable: smolvm not found on PATH; fix: install smolvm 1.7.0 or later (curl -sSL https://smolmachines.com/install.sh | sh) and make sure `smolvm` is on PATH; /dev/kvm is missing; fix: enable hardware virtualization (VT-x/AMD-V, or nested virtualization in a VM) and load kvm_intel or kvm_amd (sudo modprobe kvm_intel, or kvm_amd); sqlite3 not found on PATH (bot-bottle reads smolvm's state database with it to confirm each machine's isolation); fix: install it (sudo apt-get install sqlite3, or sudo dnf install sqlite); the machine needs a Linux build of bot-bottle as its init; fix: set BOT_BOTTLE_LINUX_EXE to a Linux bot-bottle binary; no machine image is configured; fix: build the agent image with the docker backend's Dockerfile and set BOT_BOTTLE_SMOLVM_IMAGE to it (e.g. docker save <image> -o agent.tar; BOT_BOTTLE_SMOLVM_IMAGE=$PWD/agent.tar); warning: implemented and proven against fakes only (an in-process fake smolvm, and a stand-in smolvm that `bot-bottle start` runs end to end in the project's tests); not yet run on a real smolvm host by this project (fix: check it on yours: smolvm --version && bot-bottle start <agent> --backend smolmachines -- true)"
    );
    assert_eq!(
        diagnose_apple(&AppleFacts::default()).line(),
        "apple: not usable: only available on macOS; fix: use --backend native on Linux"
    );
}

#[test]
fn smolmachines_fixes_kvm_access_and_old_versions() {
    let ready = SmolFacts {
        is_linux: true,
        smolvm: Some("/usr/local/bin/smolvm".into()),
        version: Some("smolvm 1.9.2\n".into()),
        kvm: Some(true),
        sqlite3: Some("/usr/bin/sqlite3".into()),
        guest_exe: true,
        image: true,
        ..SmolFacts::default()
    };
    let status = diagnose_smolmachines(&ready);
    assert!(status.usable, "{}", status.line());
    assert!(
        status
            .line()
            .contains("warning: implemented and proven against fakes only")
    );
    let no_access = diagnose_smolmachines(&SmolFacts {
        kvm: Some(false),
        ..ready.clone()
    });
    assert!(!no_access.usable);
    assert!(
        no_access
            .line()
            .contains("/dev/kvm exists but you cannot open it; fix: sudo usermod -aG kvm $USER")
    );
    let old = diagnose_smolmachines(&SmolFacts {
        version: Some("smolvm 0.8.0".into()),
        ..ready.clone()
    });
    assert!(!old.usable);
    assert!(
        old.line().contains(
            "smolvm 0.8.0 is too old (no --mount-socket); fix: upgrade to smolvm 1.7.0 or later"
        ),
        "{}",
        old.line()
    );
    let mac = diagnose_smolmachines(&SmolFacts {
        is_linux: false,
        is_macos: true,
        kvm: None,
        hv_support: Some(false),
        ..ready
    });
    assert!(
        mac.line().contains("Hypervisor.framework is not available"),
        "{}",
        mac.line()
    );
}

#[test]
fn apple_fixes_an_old_macos_and_a_stopped_api_server() {
    let mac = AppleFacts {
        is_macos: true,
        macos_major: Some(15),
        container_cli: Some("/usr/local/bin/container".into()),
        system_running: Some(false),
        init_exe: true,
        ..AppleFacts::default()
    };
    let line = diagnose_apple(&mac).line();
    assert!(
        line.contains("macOS 15 has no user-defined container networks"),
        "{line}"
    );
    assert!(
        line.contains("the container API server is not running; fix: container system start"),
        "{line}"
    );
    assert!(
        line.contains("not yet run on a Mac by this project"),
        "{line}"
    );
}

#[test]
fn apple_off_macos_only_with_a_named_stand_in() {
    let stand_in = AppleFacts {
        cli_override: Some("/opt/fake/container".into()),
        container_cli: Some("/opt/fake/container".into()),
        system_running: Some(true),
        init_exe: true,
        ..AppleFacts::default()
    };
    let status = diagnose_apple(&stand_in);
    assert!(status.usable, "{}", status.line());
    assert!(
        status.line().contains(
            "not macOS: /opt/fake/container (BOT_BOTTLE_APPLE_CLI) stands in for Apple's container CLI"
        ),
        "{}",
        status.line()
    );
    let missing = AppleFacts {
        container_cli: None,
        system_running: None,
        ..stand_in
    };
    let status = diagnose_apple(&missing);
    assert!(!status.usable);
    assert!(
        status.line().contains(
            "BOT_BOTTLE_APPLE_CLI names /opt/fake/container, which is not an executable file; fix: point BOT_BOTTLE_APPLE_CLI at Apple's container CLI, or unset it"
        ),
        "{}",
        status.line()
    );
    // The agent image is no requirement: `start` builds it with `container build`.
    let status = diagnose_apple(&AppleFacts {
        is_macos: true,
        macos_major: Some(26),
        container_cli: Some("/usr/local/bin/container".into()),
        system_running: Some(true),
        init_exe: true,
        ..AppleFacts::default()
    });
    assert!(status.usable, "{}", status.line());
}
