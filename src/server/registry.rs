//! Who is connected: one entry per session, kept up to date by the session
//! and read by `ftpgate who` (over the admin socket) and the `/status` page.

use crate::protocol::TransferDirection;
use crate::relay::Progress;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

#[derive(Debug, Default)]
pub struct Registry {
    sessions: Mutex<BTreeMap<u64, Arc<Entry>>>,
}

#[derive(Debug)]
pub struct Entry {
    id: u64,
    client: SocketAddr,
    since: Instant,
    state: Mutex<EntryState>,
}

#[derive(Debug, Clone)]
struct EntryState {
    /// As typed at USER; shown only once logged in (a password typed into
    /// the user field must not appear anywhere).
    user: Option<String>,
    logged_in: bool,
    /// The backend's name (`default` or a named backend) and its address;
    /// the address is shown to `ftpgate who`, never on `/status`.
    backend: Option<(String, String)>,
    /// What the session waits for, in words.
    doing: &'static str,
    last_command: Instant,
    transfer: Option<Transfer>,
}

/// A running transfer as `who` shows it.
#[derive(Debug, Clone)]
pub struct Transfer {
    pub command: String,
    pub path: String,
    pub direction: TransferDirection,
    pub started: Instant,
    /// From the backend's `150 ... (N bytes)`, when it says.
    pub size: Option<u64>,
    pub progress: Arc<Progress>,
}

/// Removes its session's entry when the session ends.
#[derive(Debug)]
pub struct Registration {
    registry: Arc<Registry>,
    pub entry: Arc<Entry>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.sessions.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.entry.id);
    }
}

impl Registry {
    pub fn register(self: &Arc<Self>, id: u64, client: SocketAddr) -> Registration {
        let now = Instant::now();
        let entry = Arc::new(Entry {
            id,
            client,
            since: now,
            state: Mutex::new(EntryState {
                user: None,
                logged_in: false,
                backend: None,
                doing: "login",
                last_command: now,
                transfer: None,
            }),
        });
        self.sessions.lock().unwrap_or_else(|e| e.into_inner()).insert(id, Arc::clone(&entry));
        Registration { registry: Arc::clone(self), entry }
    }

    /// Every session now, oldest first.
    pub fn rows(&self) -> Vec<Row> {
        let entries: Vec<Arc<Entry>> =
            self.sessions.lock().unwrap_or_else(|e| e.into_inner()).values().cloned().collect();
        let now = Instant::now();
        entries
            .iter()
            .map(|e| {
                let s = e.state.lock().unwrap_or_else(|p| p.into_inner()).clone();
                let transfer = s.transfer.map(|t| {
                    let moved = match t.direction {
                        TransferDirection::Download => t.progress.b_to_a.written.load(Ordering::Relaxed),
                        TransferDirection::Upload => t.progress.a_to_b.written.load(Ordering::Relaxed),
                    };
                    let secs = now.duration_since(t.started).as_secs_f64().max(0.001);
                    let rate = (moved as f64 / secs) as u64;
                    TransferRow {
                        command: t.command,
                        path: t.path,
                        bytes: moved,
                        rate,
                        percent: t.size.filter(|&s| s > 0).map(|s| (moved.saturating_mul(100) / s).min(100) as u8),
                        size: t.size,
                        eta_secs: t.size.filter(|_| rate > 0).map(|s| s.saturating_sub(moved) / rate),
                        elapsed_secs: now.duration_since(t.started).as_secs(),
                    }
                });
                // The control connection is quiet while a transfer runs, but
                // the session is not idle: both are shown, apart.
                let control_idle_secs = now.duration_since(s.last_command).as_secs();
                let idle_secs = if transfer.is_some() { None } else { Some(control_idle_secs) };
                let (backend, backend_address) = s.backend.unzip();
                Row {
                    id: e.id,
                    client: e.client,
                    user: s.user.filter(|_| s.logged_in),
                    backend,
                    backend_address,
                    state: s.doing,
                    connected_secs: now.duration_since(e.since).as_secs(),
                    idle_secs,
                    control_idle_secs,
                    transfer,
                }
            })
            .collect()
    }
}

impl Entry {
    fn update(&self, f: impl FnOnce(&mut EntryState)) {
        f(&mut self.state.lock().unwrap_or_else(|e| e.into_inner()));
    }

    pub fn command(&self) {
        self.update(|s| s.last_command = Instant::now());
    }

    pub fn user(&self, user: &str) {
        self.update(|s| s.user = Some(user.to_string()));
    }

    pub fn backend(&self, name: &str, address: &str) {
        self.update(|s| s.backend = Some((name.to_string(), address.to_string())));
    }

    pub fn logged_in(&self) {
        self.update(|s| {
            s.doing = "idle";
            s.logged_in = true;
        });
    }

    pub fn transfer(&self, t: Option<Transfer>) {
        self.update(|s| {
            s.doing = if t.is_some() { "transfer" } else { "idle" };
            s.transfer = t;
        });
    }
}

/// One session as shown.
#[derive(Debug, Clone)]
pub struct Row {
    pub id: u64,
    pub client: SocketAddr,
    /// Only once logged in.
    pub user: Option<String>,
    /// `default` or the named backend.
    pub backend: Option<String>,
    /// For `ftpgate who` only.
    pub backend_address: Option<String>,
    pub state: &'static str,
    pub connected_secs: u64,
    /// How long the session has done nothing; none while a transfer runs.
    pub idle_secs: Option<u64>,
    /// Since the last command on the control connection, transfer or not.
    pub control_idle_secs: u64,
    pub transfer: Option<TransferRow>,
}

#[derive(Debug, Clone)]
pub struct TransferRow {
    pub command: String,
    pub path: String,
    pub bytes: u64,
    /// Bytes per second since the transfer started.
    pub rate: u64,
    pub percent: Option<u8>,
    /// The file's size, when the backend announced it.
    pub size: Option<u64>,
    /// Seconds left at the rate so far, when the size is known.
    pub eta_secs: Option<u64>,
    /// Since the transfer command.
    pub elapsed_secs: u64,
}

/// `ftpgate who`: a table as ProFTPD's ftpwho prints one.
pub fn render_text(rows: &[Row]) -> String {
    struct Cells {
        user: String,
        client: String,
        backend: String,
        transfer: String,
    }
    let cells: Vec<Cells> = rows
        .iter()
        .map(|r| Cells {
            user: r.user.as_deref().map_or("-".to_string(), shown),
            client: r.client.to_string(),
            backend: match (&r.backend, &r.backend_address) {
                (Some(n), Some(a)) => format!("{n} ({a})"),
                (Some(n), None) => n.clone(),
                _ => "-".to_string(),
            },
            transfer: r.transfer.as_ref().map_or(String::new(), |t| {
                let pct = t.percent.map_or(String::new(), |p| format!(" {p}%"));
                let of = t.size.map_or(String::new(), |s| format!(" of {}", human(s)));
                let left = t.eta_secs.map_or(String::new(), |s| format!(" {s}s left"));
                format!(
                    "{} {} {} bytes{of} {}/s{pct} for {}s{left}",
                    t.command,
                    shown(&t.path),
                    t.bytes,
                    human(t.rate),
                    t.elapsed_secs
                )
            }),
        })
        .collect();
    // Columns as wide as their widest cell, so a long backend address or
    // user name never shifts the columns after it.
    let width =
        |min: usize, f: fn(&Cells) -> &str| cells.iter().map(|c| f(c).chars().count()).max().unwrap_or(0).max(min);
    let (wu, wc, wb) = (width(16, |c| &c.user), width(22, |c| &c.client), width(22, |c| &c.backend));
    let mut out = format!(
        "{:>5}  {:<wu$} {:<wc$} {:<wb$} {:<9} {:>6} {:>6} {:>9}  TRANSFER\n",
        "ID", "USER", "CLIENT", "BACKEND", "STATE", "CONN", "IDLE", "CTRL-IDLE"
    );
    for (r, c) in rows.iter().zip(&cells) {
        out.push_str(&format!(
            "{:>5}  {:<wu$} {:<wc$} {:<wb$} {:<9} {:>5}s {:>6} {:>8}s  {}\n",
            r.id,
            c.user,
            c.client,
            c.backend,
            r.state,
            r.connected_secs,
            r.idle_secs.map_or("-".to_string(), |s| format!("{s}s")),
            r.control_idle_secs,
            c.transfer
        ));
    }
    out.push_str(&format!("{} session(s)\n", rows.len()));
    out
}

/// A byte rate for people: `1.5 MiB`.
pub fn human(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= 1024.0 * 1024.0 {
        format!("{:.1} MiB", b / 1024.0 / 1024.0)
    } else if b >= 1024.0 {
        format!("{:.1} KiB", b / 1024.0)
    } else {
        format!("{bytes} B")
    }
}

/// A peer's text, control characters escaped and length bounded.
pub(super) fn shown(s: &str) -> String {
    crate::text::shown(s, 200)
}

/// The size a `150` reply announces: vsftpd and ProFTPD say `(N bytes)`.
pub fn announced_size(text: &str) -> Option<u64> {
    let open = text.rfind('(')?;
    let inner = &text[open + 1..];
    let n = inner.split_whitespace().next()?;
    inner[n.len()..].trim_start().starts_with("bytes").then(|| n.parse().ok()).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_from_150_and_html_escaping() {
        assert_eq!(
            announced_size("150 Opening BINARY mode data connection for big.bin (10485760 bytes)."),
            Some(10485760)
        );
        assert_eq!(announced_size("150 Ok to send data."), None);
        let r = Arc::new(Registry::default());
        let reg = r.register(7, "127.0.0.1:5000".parse().unwrap());
        reg.entry.user("<script>");
        let render_html =
            |rows: &[Row]| super::super::status_page::render(&super::super::status_page::Header::default(), rows);
        assert!(!render_html(&r.rows()).contains("script"), "no user name before login");
        reg.entry.logged_in();
        let html = render_html(&r.rows());
        assert!(html.contains("&lt;script&gt;") && !html.contains("<script>"), "{html}");
        assert!(render_text(&r.rows()).contains("1 session(s)"));
        reg.entry.user("\u{1b}[2J\u{1b}]0;owned\u{7}");
        let text = render_text(&r.rows());
        assert!(text.contains("\\u{1b}[2J") && !text.contains('\u{1b}'), "{text}");
        reg.entry.backend("default", "10.0.0.20:21");
        assert!(render_text(&r.rows()).contains("default (10.0.0.20:21)"));
        assert!(!render_html(&r.rows()).contains("10.0.0.20"), "no internal address on /status");
        drop(reg);
        assert!(r.rows().is_empty());
    }

    #[test]
    fn who_columns_are_as_wide_as_their_widest_cell() {
        let r = Arc::new(Registry::default());
        let short = r.register(1, "127.0.0.1:5000".parse().unwrap());
        short.entry.backend("default", "10.0.0.2:21");
        short.entry.logged_in();
        let long = r.register(2, "[2001:db8::1234:5678:9abc]:50000".parse().unwrap());
        long.entry.backend("archive-pool", "[2001:db8:ffff::1234:5678:9abc]:2121");
        long.entry.logged_in();
        let text = render_text(&r.rows());
        let lines: Vec<&str> = text.lines().collect();
        let state_at = lines[0].find("STATE").unwrap();
        for line in &lines[1..3] {
            assert_eq!(line.find("idle"), Some(state_at), "STATE column shifted:\n{text}");
        }
    }
}
