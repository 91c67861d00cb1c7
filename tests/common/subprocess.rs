//! External client processes for the interoperability tests (mosquitto_pub / mosquitto_sub,
//! python3 + paho-mqtt): stdout read line by line on a thread so a test can wait for a
//! given line with a timeout, stderr kept for failure messages, every wait bounded, and the
//! process killed (SIGKILL) and reaped when the handle is dropped, so a failing test never
//! leaves one behind.
//!
//! Included by the test files that need it with
//! `#[path = "common/subprocess.rs"] mod subprocess;`.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A running external process.
pub struct Proc {
    /// A name for messages (e.g. "mosquitto_sub sub-3").
    pub name: String,
    child: Child,
    lines: Receiver<String>,
    /// Every stdout line consumed so far, in order.
    pub seen: Vec<String>,
    stderr: Arc<Mutex<String>>,
    readers: Vec<JoinHandle<()>>,
    exited: Option<ExitStatus>,
}

/// Spawns `cmd` with piped stdout/stderr (and `stdin` written then closed, if given).
/// A program that cannot be found is a test failure with `install_hint` in the message.
pub fn spawn(cmd: &mut Command, name: &str, install_hint: &str, stdin: Option<&[u8]>) -> Proc {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    let program = cmd.get_program().to_string_lossy().into_owned();
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!("`{program}` is not installed (not found on PATH): {install_hint}")
        }
        Err(e) => panic!("cannot start `{program}`: {e}"),
    };
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        pipe.write_all(input).expect("write child stdin");
        // Dropping the pipe closes it: EOF for the child.
    }
    let (tx, lines) = channel();
    let stdout = child.stdout.take().unwrap();
    let out_reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            match line {
                Ok(l) => {
                    if tx.send(l).is_err() {
                        return;
                    }
                }
                Err(_) => return,
            }
        }
    });
    let stderr = Arc::new(Mutex::new(String::new()));
    let mut err_pipe = child.stderr.take().unwrap();
    let err_buf = stderr.clone();
    let err_reader = std::thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        while let Ok(n) = err_pipe.read(&mut chunk) {
            if n == 0 {
                return;
            }
            err_buf
                .lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&chunk[..n]));
        }
    });
    Proc {
        name: name.to_owned(),
        child,
        lines,
        seen: Vec::new(),
        stderr,
        readers: vec![out_reader, err_reader],
        exited: None,
    }
}

impl Proc {
    /// What the process wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    fn context(&self) -> String {
        format!(
            "{}: stdout so far:\n{}\nstderr:\n{}",
            self.name,
            self.seen.join("\n"),
            self.stderr()
        )
    }

    /// Consumes stdout lines until one satisfies `pred` and returns it; panics (with the
    /// output so far) after `timeout` or if stdout ends first.
    pub fn wait_line(
        &mut self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if pred(&line) {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!("waited {timeout:?} for {what}; {}", self.context())
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.child.try_wait().ok().flatten();
                    panic!(
                        "stdout ended (exit status {status:?}) before {what}; {}",
                        self.context()
                    )
                }
            }
        }
    }

    /// Waits (at most `timeout`, then kills and panics) for the process to exit; returns
    /// its status and every stdout line it wrote (including those consumed before).
    pub fn wait_exit(&mut self, timeout: Duration) -> (ExitStatus, Vec<String>) {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                break s;
            }
            if Instant::now() >= deadline {
                self.kill();
                panic!("did not exit within {timeout:?}; {}", self.context());
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        self.exited = Some(status);
        // The pipe is closed at exit: drain what is left, bounded in case a grandchild
        // holds it open.
        let drain_deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let left = drain_deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(_) => break,
            }
        }
        (status, self.seen.clone())
    }

    /// Like [`Proc::wait_exit`] and asserts the exit status is success.
    pub fn wait_success(&mut self, timeout: Duration) -> Vec<String> {
        let (status, lines) = self.wait_exit(timeout);
        assert!(status.success(), "exited with {status}; {}", self.context());
        lines
    }

    /// SIGKILL (no cleanup in the process: its socket is closed by the kernel without an
    /// MQTT DISCONNECT) and reap.
    pub fn kill(&mut self) {
        if self.exited.is_none() {
            let _ = self.child.kill();
            self.exited = self.child.wait().ok();
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
        // The reader threads end at EOF, which the kill brings; they are not joined so
        // that a pipe held open elsewhere cannot hang the test.
        self.readers.clear();
    }
}
