//! The bottle's seccomp filter: a deny list of the syscalls that widen the attack surface of the
//! kernel or escape the namespaces, on top of an otherwise normal process (bash, git, curl,
//! python3 and node work unchanged).
//!
//! The policy is data ([`policy`]) so its rules are unit-tested; [`compile`] turns it into BPF
//! with `seccompiler`. Three programs are installed, all returning an error instead of killing
//! so tools degrade the way they do on a locked-down kernel:
//! * a guard rejecting the x32 syscall ABI (the same syscalls under other numbers);
//! * the deny list (`EPERM`);
//! * `clone3` answering `ENOSYS`: its flags live in memory BPF cannot read, so libc falls back
//!   to `clone`, whose flags the deny list checks for `CLONE_NEW*`.
//!
//! Syscalls of a foreign ABI (i386 `int 0x80` on x86_64) kill the process: `seccompiler`
//! checks the architecture first.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch, sock_filter,
};

/// Namespace-creating clone/unshare flags.
pub const CLONE_NEW_FLAGS: [(&str, u64); 8] = [
    ("CLONE_NEWNS", libc::CLONE_NEWNS as u64),
    ("CLONE_NEWCGROUP", libc::CLONE_NEWCGROUP as u64),
    ("CLONE_NEWUTS", libc::CLONE_NEWUTS as u64),
    ("CLONE_NEWIPC", libc::CLONE_NEWIPC as u64),
    ("CLONE_NEWUSER", libc::CLONE_NEWUSER as u64),
    ("CLONE_NEWPID", libc::CLONE_NEWPID as u64),
    ("CLONE_NEWNET", libc::CLONE_NEWNET as u64),
    ("CLONE_NEWTIME", 0x80),
];

/// Terminal ioctls that inject input into, or reconfigure, a terminal shared with the host.
pub const DENIED_IOCTLS: [(&str, u64); 2] = [("TIOCSTI", 0x5412), ("TIOCLINUX", 0x541C)];

/// When a denied syscall matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// Always.
    Always,
    /// When any of these flag bits is set in argument `arg`.
    AnyFlag { arg: u8, flags: Vec<&'static str> },
    /// When argument `arg` (32 bits) is one of these values.
    OneOf { arg: u8, values: Vec<&'static str> },
}

/// One denied syscall.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    pub syscall: &'static str,
    pub when: Condition,
}

/// Syscalls denied outright, and why.
const ALWAYS_DENIED: [&str; 37] = [
    // new namespaces and mounts
    "setns",
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "open_tree",
    "move_mount",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "mount_setattr",
    // other processes' memory
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    // kernel keyring
    "add_key",
    "request_key",
    "keyctl",
    // kernel attack surface
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "init_module",
    "finit_module",
    "delete_module",
    "reboot",
    "kexec_load",
    "kexec_file_load",
    "swapon",
    "swapoff",
    "acct",
    "quotactl",
    "syslog",
    "iopl",
    "ioperm",
    // io_uring: a large kernel surface whose operations seccomp cannot see (libuv, tokio and
    // friends fall back to threads when it is refused, as under Docker's default profile)
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
];

/// The deny list for this architecture.
pub fn policy() -> Vec<Denied> {
    let ns_flags: Vec<&'static str> = CLONE_NEW_FLAGS.iter().map(|(n, _)| *n).collect();
    let mut rules: Vec<Denied> = ALWAYS_DENIED
        .iter()
        .filter(|name| syscall_number(name).is_some())
        .map(|name| Denied {
            syscall: name,
            when: Condition::Always,
        })
        .collect();
    rules.push(Denied {
        syscall: "unshare",
        when: Condition::AnyFlag {
            arg: 0,
            flags: ns_flags.clone(),
        },
    });
    rules.push(Denied {
        syscall: "clone",
        when: Condition::AnyFlag {
            arg: 0,
            flags: ns_flags,
        },
    });
    rules.push(Denied {
        syscall: "ioctl",
        when: Condition::OneOf {
            arg: 1,
            values: DENIED_IOCTLS.iter().map(|(n, _)| *n).collect(),
        },
    });
    rules
}

/// Errors compiling the filter.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("seccomp is not supported on this CPU architecture")]
    UnsupportedArch,
    #[error("building the seccomp filter: {0}")]
    Build(String),
    #[error("installing the seccomp filter: {0}")]
    Install(String),
}

fn target_arch() -> Result<TargetArch, SeccompError> {
    if cfg!(target_arch = "x86_64") {
        Ok(TargetArch::x86_64)
    } else if cfg!(target_arch = "aarch64") {
        Ok(TargetArch::aarch64)
    } else if cfg!(target_arch = "riscv64") {
        Ok(TargetArch::riscv64)
    } else {
        Err(SeccompError::UnsupportedArch)
    }
}

/// The syscall number of a name in the deny list, where this architecture has it.
pub fn syscall_number(name: &str) -> Option<i64> {
    let nr = match name {
        "setns" => libc::SYS_setns,
        "mount" => libc::SYS_mount,
        "umount2" => libc::SYS_umount2,
        "pivot_root" => libc::SYS_pivot_root,
        "chroot" => libc::SYS_chroot,
        "open_tree" => libc::SYS_open_tree,
        "move_mount" => libc::SYS_move_mount,
        "fsopen" => libc::SYS_fsopen,
        "fsconfig" => libc::SYS_fsconfig,
        "fsmount" => libc::SYS_fsmount,
        "fspick" => libc::SYS_fspick,
        "mount_setattr" => libc::SYS_mount_setattr,
        "ptrace" => libc::SYS_ptrace,
        "process_vm_readv" => libc::SYS_process_vm_readv,
        "process_vm_writev" => libc::SYS_process_vm_writev,
        "add_key" => libc::SYS_add_key,
        "request_key" => libc::SYS_request_key,
        "keyctl" => libc::SYS_keyctl,
        "bpf" => libc::SYS_bpf,
        "perf_event_open" => libc::SYS_perf_event_open,
        "userfaultfd" => libc::SYS_userfaultfd,
        "init_module" => libc::SYS_init_module,
        "finit_module" => libc::SYS_finit_module,
        "delete_module" => libc::SYS_delete_module,
        "reboot" => libc::SYS_reboot,
        "kexec_load" => libc::SYS_kexec_load,
        "kexec_file_load" => libc::SYS_kexec_file_load,
        "swapon" => libc::SYS_swapon,
        "swapoff" => libc::SYS_swapoff,
        "acct" => libc::SYS_acct,
        "quotactl" => libc::SYS_quotactl,
        "syslog" => libc::SYS_syslog,
        #[cfg(target_arch = "x86_64")]
        "iopl" => libc::SYS_iopl,
        #[cfg(target_arch = "x86_64")]
        "ioperm" => libc::SYS_ioperm,
        "io_uring_setup" => libc::SYS_io_uring_setup,
        "io_uring_enter" => libc::SYS_io_uring_enter,
        "io_uring_register" => libc::SYS_io_uring_register,
        "unshare" => libc::SYS_unshare,
        "clone" => libc::SYS_clone,
        "clone3" => libc::SYS_clone3,
        "ioctl" => libc::SYS_ioctl,
        _ => return None,
    };
    Some(nr)
}

fn flag_value(name: &str) -> Option<u64> {
    CLONE_NEW_FLAGS
        .iter()
        .chain(DENIED_IOCTLS.iter())
        .find(|(n, _)| *n == name)
        .map(|(_, v)| *v)
}

fn build_err(e: impl std::fmt::Display) -> SeccompError {
    SeccompError::Build(e.to_string())
}

/// The BPF programs to install, in order.
pub fn compile(rules: &[Denied]) -> Result<Vec<BpfProgram>, SeccompError> {
    let arch = target_arch()?;
    let mut map: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for rule in rules {
        let nr = syscall_number(rule.syscall)
            .ok_or_else(|| build_err(format!("unknown syscall {}", rule.syscall)))?;
        let entry = map.entry(nr).or_default();
        match &rule.when {
            Condition::Always => entry.clear(),
            Condition::AnyFlag { arg, flags } => {
                for flag in flags {
                    let bit = flag_value(flag).ok_or_else(|| build_err(flag))?;
                    let cond = SeccompCondition::new(
                        *arg,
                        SeccompCmpArgLen::Qword,
                        SeccompCmpOp::MaskedEq(bit),
                        bit,
                    )
                    .map_err(build_err)?;
                    entry.push(SeccompRule::new(vec![cond]).map_err(build_err)?);
                }
            }
            Condition::OneOf { arg, values } => {
                for value in values {
                    let v = flag_value(value).ok_or_else(|| build_err(value))?;
                    let cond =
                        SeccompCondition::new(*arg, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, v)
                            .map_err(build_err)?;
                    entry.push(SeccompRule::new(vec![cond]).map_err(build_err)?);
                }
            }
        }
    }
    let deny = SeccompFilter::new(
        map,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )
    .map_err(build_err)?;
    let mut clone3 = BTreeMap::new();
    clone3.insert(libc::SYS_clone3, Vec::new());
    let clone3 = SeccompFilter::new(
        clone3,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch,
    )
    .map_err(build_err)?;
    let mut programs = Vec::new();
    if let Some(guard) = x32_guard() {
        programs.push(guard);
    }
    programs.push(BpfProgram::try_from(deny).map_err(build_err)?);
    programs.push(BpfProgram::try_from(clone3).map_err(build_err)?);
    Ok(programs)
}

/// On x86_64, syscall numbers with bit 30 set are the x32 ABI: the same kernel entry points
/// under other numbers, which a deny list by number would miss. They are all refused.
fn x32_guard() -> Option<BpfProgram> {
    if !cfg!(target_arch = "x86_64") {
        return None;
    }
    const BPF_LD_W_ABS: u16 = 0x20;
    const BPF_JGE_K: u16 = 0x35;
    const BPF_RET_K: u16 = 0x06;
    const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
    const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
    let ins = |code, jt, jf, k| sock_filter { code, jt, jf, k };
    Some(vec![
        // A = seccomp_data.nr (offset 0)
        ins(BPF_LD_W_ABS, 0, 0, 0),
        ins(BPF_JGE_K, 0, 1, 0x4000_0000),
        ins(BPF_RET_K, 0, 0, SECCOMP_RET_ERRNO | libc::ENOSYS as u32),
        ins(BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW),
    ])
}

/// Installs the programs on the calling thread (requires `no_new_privs`).
pub fn install(programs: &[BpfProgram]) -> Result<(), SeccompError> {
    for program in programs {
        seccompiler::apply_filter(program).map_err(|e| SeccompError::Install(e.to_string()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use pretty_assertions::assert_eq;

    use super::*;

    #[test]
    fn policy_denies_namespaces_mounts_ptrace_keyring_and_kernel_surface() {
        let rules = policy();
        let always: Vec<&str> = rules
            .iter()
            .filter(|r| r.when == Condition::Always)
            .map(|r| r.syscall)
            .collect();
        let mut expected: Vec<&str> = ALWAYS_DENIED.to_vec();
        if !cfg!(target_arch = "x86_64") {
            expected.retain(|s| *s != "iopl" && *s != "ioperm");
        }
        assert_eq!(always, expected);
        let ns = vec![
            "CLONE_NEWNS",
            "CLONE_NEWCGROUP",
            "CLONE_NEWUTS",
            "CLONE_NEWIPC",
            "CLONE_NEWUSER",
            "CLONE_NEWPID",
            "CLONE_NEWNET",
            "CLONE_NEWTIME",
        ];
        let conditional: Vec<Denied> = rules
            .into_iter()
            .filter(|r| r.when != Condition::Always)
            .collect();
        assert_eq!(
            conditional,
            vec![
                Denied {
                    syscall: "unshare",
                    when: Condition::AnyFlag {
                        arg: 0,
                        flags: ns.clone()
                    }
                },
                Denied {
                    syscall: "clone",
                    when: Condition::AnyFlag { arg: 0, flags: ns }
                },
                Denied {
                    syscall: "ioctl",
                    when: Condition::OneOf {
                        arg: 1,
                        values: vec!["TIOCSTI", "TIOCLINUX"]
                    }
                },
            ]
        );
    }

    #[test]
    fn clone_flag_values_match_the_kernel() {
        let or: u64 = CLONE_NEW_FLAGS
            .iter()
            .map(|(_, v)| *v)
            .fold(0, |a, b| a | b);
        assert_eq!(or, 0x7e02_0080);
    }

    #[test]
    fn policy_compiles_to_bpf() {
        let programs = compile(&policy()).unwrap();
        let expected = if cfg!(target_arch = "x86_64") { 3 } else { 2 };
        assert_eq!(programs.len(), expected);
        assert!(programs.iter().all(|p| !p.is_empty() && p.len() < 4096));
    }

    #[test]
    fn unknown_syscalls_are_a_build_error() {
        let err = compile(&[Denied {
            syscall: "no_such_call",
            when: Condition::Always,
        }])
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "building the seccomp filter: unknown syscall no_such_call"
        );
    }
}
