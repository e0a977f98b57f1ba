//! A thread that lives in the target network namespace for as long as pasta runs, and makes
//! the sockets pasta needs there after start-up (`auto` forwarding's new `-T`/`-U`
//! listeners).
//!
//! Why a thread of its own rather than entering the namespace when needed: entering takes
//! CAP_SYS_ADMIN over the namespace and the `setns` call, and once pasta has switched to
//! `nobody` (started as root) and its seccomp filter is on, it has neither. A socket belongs to
//! the namespace of the thread that created it, whoever uses it later, so one thread that
//! entered at start and never leaves is enough. Like every thread it goes through the
//! per-thread isolation steps (mount namespace, capabilities): the caller hands them to it
//! through [`NsAgent::run`].

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::mpsc;
use std::thread::JoinHandle;

use crate::ns::{in_netns, NsError};

/// Work inside the target network namespace, done either from a thread that enters it for the
/// call (any namespace descriptor: start-up, while pasta still can) or by the [`NsAgent`].
pub trait InNetns {
    fn run_in<R: Send + 'static>(
        &self,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> Result<R, NsError>;
}

/// Makes a socket (or does other I/O) inside the namespace: `make`'s own error, or why the
/// namespace couldn't be reached, as one `io::Error`.
pub(crate) fn io_in<R: Send + 'static>(
    netns: &impl InNetns,
    make: impl FnOnce() -> std::io::Result<R> + Send + 'static,
) -> std::io::Result<R> {
    netns
        .run_in(make)
        .map_err(|e| std::io::Error::other(e.to_string()))?
}

impl<T: AsFd> InNetns for T {
    fn run_in<R: Send + 'static>(
        &self,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> Result<R, NsError> {
        in_netns(self.as_fd(), f)
    }
}

impl InNetns for NsAgent {
    fn run_in<R: Send + 'static>(
        &self,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> Result<R, NsError> {
        self.run(f)
    }
}

type Job = Box<dyn FnOnce() + Send>;

/// The namespace thread: runs closures inside the namespace, one at a time, in order.
pub struct NsAgent {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for NsAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NsAgent").finish_non_exhaustive()
    }
}

impl NsAgent {
    /// Starts the thread and moves it into `netns` for good.
    pub fn start(netns: impl AsFd) -> Result<NsAgent, NsError> {
        let fd: OwnedFd = netns
            .as_fd()
            .try_clone_to_owned()
            .map_err(NsError::sys("duplicating the namespace descriptor"))?;
        let (jobs, queue) = mpsc::channel::<Job>();
        let (ready_tx, ready) = mpsc::channel::<std::io::Result<()>>();
        let thread = std::thread::Builder::new()
            .name("pasta-netns".into())
            .spawn(move || {
                // SAFETY: plain system call on a valid fd, for this thread only.
                let entered = if unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) } == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                };
                drop(fd);
                let ok = entered.is_ok();
                let _ = ready_tx.send(entered);
                if !ok {
                    return;
                }
                while let Ok(job) = queue.recv() {
                    job();
                }
            })
            .map_err(NsError::sys("starting the namespace thread"))?;
        match ready.recv() {
            Ok(Ok(())) => Ok(NsAgent {
                jobs: Some(jobs),
                thread: Some(thread),
            }),
            Ok(Err(source)) => {
                let _ = thread.join();
                Err(NsError::EnterNetns { source })
            }
            Err(_) => Err(NsError::Invalid("the namespace thread died".into())),
        }
    }

    /// Runs `f` in the namespace thread and returns its result.
    pub fn run<R: Send + 'static>(
        &self,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> Result<R, NsError> {
        let (tx, rx) = mpsc::sync_channel(1);
        let job: Job = Box::new(move || {
            let _ = tx.send(f());
        });
        self.jobs
            .as_ref()
            .and_then(|j| j.send(job).ok())
            .ok_or_else(|| NsError::Invalid("the namespace thread is gone".into()))?;
        rx.recv()
            .map_err(|_| NsError::Invalid("the namespace thread died".into()))
    }
}

impl Drop for NsAgent {
    fn drop(&mut self) {
        // Closing the queue ends the thread's loop.
        self.jobs.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The thread's sockets are in the namespace it entered (here our own, which needs
    /// CAP_SYS_ADMIN to enter even so), jobs run in order, and a closed agent ends its thread.
    #[test]
    fn runs_jobs_in_the_namespace() {
        let own = std::fs::File::open("/proc/self/ns/net").unwrap();
        let agent = match NsAgent::start(&own) {
            Ok(a) => a,
            Err(e) => {
                if std::env::var("CI").as_deref() == Ok("true") {
                    panic!("cannot start the namespace thread: {e}");
                }
                eprintln!("\n*** SKIPPED: cannot enter a network namespace: {e} ***\n");
                return;
            }
        };
        let ns_of_thread = agent
            .run(|| std::fs::read_link("/proc/thread-self/ns/net").unwrap())
            .unwrap();
        assert_eq!(
            ns_of_thread,
            std::fs::read_link("/proc/self/ns/net").unwrap()
        );
        let listener = agent
            .run(|| std::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap()
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let order: Vec<u32> = (0..5).map(|i| agent.run(move || i).unwrap()).collect();
        assert_eq!(order, [0, 1, 2, 3, 4]);
        drop(agent);
    }
}
