//! Sending signals to processes (used by the test suite to stop, pause and resume
//! ringway and backends without depending on an external `kill` binary).

use std::io;

/// Signals ringway's tooling sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM: graceful stop.
    Term,
    /// SIGINT: graceful stop.
    Int,
    /// SIGHUP: reload.
    Hup,
    /// SIGSTOP: freeze.
    Stop,
    /// SIGCONT: resume.
    Cont,
    /// SIGQUIT.
    Quit,
    /// SIGUSR1.
    Usr1,
    /// SIGUSR2.
    Usr2,
    /// SIGWINCH.
    Winch,
    /// SIGTTIN.
    Ttin,
    /// SIGTTOU.
    Ttou,
    /// SIGKILL.
    Kill,
}

impl Signal {
    fn number(self) -> libc::c_int {
        match self {
            Signal::Term => libc::SIGTERM,
            Signal::Int => libc::SIGINT,
            Signal::Hup => libc::SIGHUP,
            Signal::Stop => libc::SIGSTOP,
            Signal::Cont => libc::SIGCONT,
            Signal::Quit => libc::SIGQUIT,
            Signal::Usr1 => libc::SIGUSR1,
            Signal::Usr2 => libc::SIGUSR2,
            Signal::Winch => libc::SIGWINCH,
            Signal::Ttin => libc::SIGTTIN,
            Signal::Ttou => libc::SIGTTOU,
            Signal::Kill => libc::SIGKILL,
        }
    }
}

/// Sends `sig` to process `pid`.
pub fn send(pid: u32, sig: Signal) -> io::Result<()> {
    let pid =
        libc::pid_t::try_from(pid).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
    syscall!(kill(pid, sig.number()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_and_continue_a_child() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        send(child.id(), Signal::Stop).unwrap();
        send(child.id(), Signal::Cont).unwrap();
        send(child.id(), Signal::Term).unwrap();
        let st = child.wait().unwrap();
        assert!(!st.success());
        assert_eq!(
            send(u32::MAX, Signal::Term).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
    }
}
