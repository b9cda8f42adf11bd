//! The operator's pages on the metrics listener: `/` (an index of the
//! endpoints) and `/status` (what `ftpgate who` shows, as HTML with progress
//! bars, a header about the instance, refreshing itself). One page each, no
//! external assets, nothing that runs; user names and paths are escaped and
//! no backend address or secret is shown.

use super::registry::{human, shown, Row};

/// What `/status` says of the instance above the sessions.
#[derive(Debug, Default)]
pub struct Header {
    pub version: &'static str,
    pub uptime_secs: u64,
    /// `ADDRESS (TLS mode)`.
    pub listeners: Vec<String>,
    /// Each backend pool member's name, health and sessions: `(name, up, sessions)`.
    /// Named as the configuration names it (`default #1`, `archive #2`),
    /// never by address.
    pub backends: Vec<(String, bool, u64)>,
    /// Addresses banned now on this instance.
    pub bans: usize,
    /// Each connector name a backend uses: `(name, live links, processes, streams)`.
    pub connectors: Vec<(String, usize, usize, usize)>,
}

/// `/`: links to every endpoint.
pub fn index(status_page: bool) -> String {
    let status = if status_page { "<li><a href=\"/status\">/status</a>: sessions and transfers</li>" } else { "" };
    format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>ftpgate</title></head><body>\
         <h1>ftpgate {}</h1><ul>{status}<li><a href=\"/metrics\">/metrics</a>: Prometheus metrics</li>\
         <li><a href=\"/healthz\">/healthz</a>: the process answers</li>\
         <li><a href=\"/readyz\">/readyz</a>: ready for clients (listeners up, a backend reachable, not draining)</li>\
         </ul></body></html>\n",
        env!("CARGO_PKG_VERSION")
    )
}

/// `/status`.
pub fn render(h: &Header, rows: &[Row]) -> String {
    let mut body = String::new();
    for r in rows {
        let transfer = match &r.transfer {
            None => String::new(),
            Some(t) => {
                let bar = match t.percent {
                    Some(p) => format!("<progress max=\"100\" value=\"{p}\">{p}%</progress> {p}%"),
                    None => "<progress></progress>".to_string(),
                };
                let of = t.size.map_or(String::new(), |s| format!(" of {}", human(s)));
                let left = t.eta_secs.map_or(String::new(), |s| format!(", {} left", duration(s)));
                format!(
                    "{} {} &mdash; {} bytes{of}, {}/s for {}{left} {bar}",
                    escape(&t.command),
                    escape(&shown(&t.path)),
                    t.bytes,
                    human(t.rate),
                    duration(t.elapsed_secs)
                )
            }
        };
        body.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{} s</td><td>{}</td><td>{} s</td><td class=\"transfer\">{}</td></tr>\n",
            r.id,
            escape(&r.user.as_deref().map_or("-".to_string(), shown)),
            escape(&r.client.to_string()),
            escape(r.backend.as_deref().unwrap_or("-")),
            r.state,
            r.connected_secs,
            r.idle_secs.map_or("-".to_string(), |s| format!("{s} s")),
            r.control_idle_secs,
            transfer
        ));
    }
    let backends: Vec<String> = h
        .backends
        .iter()
        .map(|(name, up, sessions)| {
            let health = if *up { "up" } else { "<b>down</b>" };
            format!("{} {health} ({sessions} session(s))", escape(name))
        })
        .collect();
    let connectors: Vec<String> = h
        .connectors
        .iter()
        .map(|(name, links, processes, streams)| {
            let health = if *links > 0 { "up" } else { "<b>down</b>" };
            format!("{} {health} ({links} link(s) from {processes} process(es), {streams} stream(s))", escape(name))
        })
        .collect();
    let connectors = if connectors.is_empty() {
        String::new()
    } else {
        format!("<dt>Connectors</dt><dd>{}</dd>", connectors.join(", "))
    };
    let transfers = rows.iter().filter(|r| r.transfer.is_some()).count();
    format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"2\">\
         <title>ftpgate status</title><style>body{{font-family:sans-serif}}td,th{{padding:2px 6px;text-align:left;vertical-align:top}}\
         progress{{width:100%;max-width:12em}}table{{width:100%}}dt{{font-weight:bold;float:left;width:7em}}</style></head><body>\
         <h1>ftpgate: {} session(s), {transfers} transfer(s)</h1>\n<dl><dt>Version</dt><dd>{}</dd>\
         <dt>Up for</dt><dd>{}</dd><dt>Listeners</dt><dd>{}</dd><dt>Backends</dt><dd>{}</dd>\
         {connectors}<dt>Bans</dt><dd>{} address(es)</dd></dl>\n<table>\
         <tr><th>ID</th><th>User</th><th>Client</th><th>Backend</th><th>State</th><th>Connected</th><th>Idle</th><th>Control idle</th>\
         <th>Transfer</th></tr>\n{body}</table><p><a href=\"/\">index</a> &middot; <a href=\"/metrics\">metrics</a></p>\
         </body></html>\n",
        rows.len(),
        escape(h.version),
        duration(h.uptime_secs),
        escape(&h.listeners.join(", ")),
        if backends.is_empty() { "-".to_string() } else { backends.join(", ") },
        h.bans,
    )
}

/// `1 h 2 min`, `3 min 4 s`, `5 s`.
fn duration(secs: u64) -> String {
    match secs {
        s if s >= 3600 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        s if s >= 60 => format!("{} min {} s", s / 60, s % 60),
        s => format!("{s} s"),
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_index_and_durations() {
        let h = Header {
            version: "9.9.9",
            uptime_secs: 3725,
            listeners: vec!["127.0.0.1:21 (explicit)".into()],
            backends: vec![("default #1".into(), true, 2), ("archive #1".into(), false, 0)],
            bans: 3,
            connectors: vec![("dc1".into(), 2, 1, 5), ("dc2".into(), 0, 0, 0)],
        };
        let html = render(&h, &[]);
        for want in [
            "9.9.9",
            "1 h 2 min",
            "127.0.0.1:21 (explicit)",
            "default #1 up (2 session(s))",
            "archive #1 <b>down</b>",
            "3 address(es)",
            "dc1 up (2 link(s) from 1 process(es), 5 stream(s))",
            "dc2 <b>down</b>",
        ] {
            assert!(html.contains(want), "{want}: {html}");
        }
        let page = index(true);
        assert!(page.contains("href=\"/status\"") && page.contains("href=\"/readyz\""), "{page}");
        assert!(!index(false).contains("/status"));
        assert_eq!(duration(65), "1 min 5 s");
    }
}
