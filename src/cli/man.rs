//! The man pages: ftpgate(1) and one page per subcommand
//! (ftpgate-run(1), ftpgate-certs-init(1), ...), generated from the clap
//! definitions so they never disagree with `--help`, plus the sections an
//! operator looks for that clap knows nothing of (FILES, SIGNALS, EXIT
//! STATUS, ENVIRONMENT, EXAMPLES, SEE ALSO), written here by hand in roff.

use super::Cli;
use clap::CommandFactory;
use std::io::Write;
use std::path::Path;

/// ftpgate(1)'s own sections, after the generated ones.
const SECTIONS: &str = r#".SH FILES
.TP
\fI/etc/ftpgate/ftpgate.toml\fR
The configuration, read when no \fB\-\-config\fR is given and it exists.
Every setting is documented in the shipped file.
.TP
\fI/etc/ftpgate/certs/\fR
The TLS certificate and key (\fIserver.pem\fR, \fIserver.key\fR), handed to
the service by systemd's LoadCredential= and read from
\fB$CREDENTIALS_DIRECTORY\fR.
.TP
\fI/run/ftpgate/admin.sock\fR
The admin socket (\fB[admin] socket\fR) that \fBftpgate who\fR and
\fBftpgate bans\fR ask; mode 0600.
.SH SIGNALS
.TP
\fBSIGHUP\fR
Read the configuration, the certificates and the policy again. New
sessions get the new settings; running ones keep theirs, except the policy,
which all share. A broken file is logged and the old settings stay.
.TP
\fBSIGTERM\fR, \fBSIGINT\fR
Stop: close the listeners, tell idle sessions \fB421\fR, let running
transfers finish for \fBtimeouts.drain\fR, then close what is left
(\fB426\fR, \fB421\fR). The log says how many sessions and transfers drain
and the deadline.
.SH EXIT STATUS
.TP
\fB0\fR
\fBrun\fR stopped after a drain; \fBcheck\fR found the configuration valid;
\fBpolicy explain\fR allowed the command.
.TP
\fB1\fR
An error, printed as one line naming the file, the key and the line where
there is one; \fBpolicy explain\fR denied the command.
.TP
\fB2\fR
The command line could not be parsed.
.SH ENVIRONMENT
.TP
\fBFTPGATE_LOG\fR
The log filter: \fBerror\fR, \fBwarn\fR, \fBinfo\fR (the default),
\fBdebug\fR, or per target, such as \fBftpgate::audit=info,warn\fR.
.TP
\fBNO_COLOR\fR
No colour codes in logs (none are written when standard error is not a
terminal).
.TP
\fBCREDENTIALS_DIRECTORY\fR
Set by systemd: certificate and key files named in the configuration are
read from here by file name.
.TP
\fBNOTIFY_SOCKET\fR
Set by systemd for Type=notify: readiness and stopping are reported there.
.SH EXAMPLES
Check the configuration, then see every effective setting:
.PP
.RS
ftpgate check \-\-config /etc/ftpgate/ftpgate.toml
.br
ftpgate check \-\-print
.RE
.PP
FTPS for clients, with session reuse towards a strict backend:
.PP
.RS
ftpgate certs init \-\-dir /etc/ftpgate/certs \-\-name ftp.example.com
.br
ftpgate run \-\-listen 0.0.0.0:21 \-\-client\-tls explicit \-\-cert /etc/ftpgate/certs/server.pem \-\-key /etc/ftpgate/certs/server.key \-\-backend ftp.internal:21 \-\-backend\-tls explicit \-\-backend\-ca /etc/ftpgate/backend\-ca.pem
.RE
.PP
Who is connected, and lift a ban:
.PP
.RS
ftpgate who
.br
ftpgate bans lift 203.0.113.7
.RE
.SH SEE ALSO
\fBftpgate\-run\fR(1), \fBftpgate\-check\fR(1), \fBftpgate\-certs\fR(1),
\fBftpgate\-policy\fR(1), \fBftpgate\-who\fR(1), \fBftpgate\-bans\fR(1),
\fBvsftpd\fR(8), \fBproftpd\fR(8), \fBsystemd.exec\fR(5)
"#;

/// The command tree as the pages name it: `ftpgate-certs-init` and so on.
fn built() -> clap::Command {
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    cmd
}

/// ftpgate(1): the generated name, synopsis, description, options and
/// subcommands, then the hand-written sections, then the version.
pub(super) fn main_page(out: &mut dyn Write) -> std::io::Result<()> {
    let man = clap_mangen::Man::new(built());
    man.render_title(out)?;
    man.render_name_section(out)?;
    man.render_synopsis_section(out)?;
    man.render_description_section(out)?;
    man.render_options_section(out)?;
    man.render_subcommands_section(out)?;
    out.write_all(SECTIONS.as_bytes())?;
    man.render_version_section(out)
}

/// Every page into `dir`: ftpgate.1 and one per subcommand, at any depth.
pub(super) fn write_all(dir: &Path) -> std::io::Result<Vec<std::path::PathBuf>> {
    fn walk(cmd: &clap::Command, dir: &Path, out: &mut Vec<std::path::PathBuf>) -> std::io::Result<()> {
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            out.push(clap_mangen::Man::new(sub.clone()).generate_to(dir)?);
            walk(sub, dir, out)?;
        }
        Ok(())
    }
    std::fs::create_dir_all(dir)?;
    let main = dir.join("ftpgate.1");
    main_page(&mut std::fs::File::create(&main)?)?;
    let mut pages = vec![main];
    walk(&built(), dir, &mut pages)?;
    Ok(pages)
}
