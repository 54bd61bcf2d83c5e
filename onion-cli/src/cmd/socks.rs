//! `onion socks --listen 127.0.0.1:PORT [--authorities FILE] [--data-dir DIR] [--timeout SECS]
//! [--dir-mode micro|full]`:
//! a SOCKS5 proxy over the stack, as C tor's SocksPort (CONNECT with a host name or an
//! address; names are resolved by the exit), for curl (`--socks5-hostname`) and browsers.
//!
//! One thread runs everything: the [`Client`] loop plus the SOCKS connections, whose sockets
//! are read by the same inbox. Streams share a circuit per destination port until it dies;
//! then the next request builds a new one, avoiding relays that failed. Building a circuit
//! blocks the loop for its duration (bytes from other clients wait in the inbox), which keeps
//! this example short.

use std::io::Write;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use onion_cell::relaymsg::{BeginFlags, EndReason};
use onion_circuit::circuit::CircEvent;
use onion_circuit::stream::StreamId;

use crate::cmd::get::NetOptions;
use crate::net::client::{end_reason, Client};
use crate::net::event::{ConnId, Input};
use crate::net::path;
use crate::net::socks::{self, Target};

const USAGE: &str = "usage: onion socks --listen ADDR:PORT [--authorities FILE] [--data-dir DIR] \
     [--timeout SECS] [--dir-mode micro|full]";

/// How long a write to a SOCKS client may block.
const WRITE_TIMEOUT: Duration = Duration::from_secs(20);

enum State {
    Greeting,
    Request,
    Connecting { circ: usize, stream: StreamId },
    Open { circ: usize, stream: StreamId },
}

struct Conn {
    id: ConnId,
    sock: TcpStream,
    buf: Vec<u8>,
    /// Bytes from the application the circuit has not taken yet (flow control).
    up: Vec<u8>,
    state: State,
}

/// Run the subcommand (until killed).
pub fn run(args: &[String]) -> Result<(), String> {
    let mut listen: Option<SocketAddr> = None;
    let mut rest_args = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--listen" {
            let v = it.next().ok_or(USAGE)?;
            listen = Some(
                v.parse()
                    .map_err(|_| format!("--listen {v:?}: not an ADDR:PORT"))?,
            );
        } else {
            rest_args.push(a.clone());
        }
    }
    let listen = listen.ok_or(USAGE)?;
    let (opts, rest) = NetOptions::parse(&rest_args, USAGE)?;
    if !rest.is_empty() {
        return Err(USAGE.into());
    }
    let listener = TcpListener::bind(listen).map_err(|e| format!("--listen {listen}: {e}"))?;
    let mut client = Client::new();
    let dir = opts.bootstrap(&mut client)?;
    let config = path::path_config(&opts.auths);
    client.inbox().listen(listener);
    eprintln!("onion: SOCKS5 proxy listening on {listen}");
    let mut proxy = Proxy {
        conns: Vec::new(),
        pool: Vec::new(),
        avoid: Vec::new(),
    };
    loop {
        let _ = client.step(client.deadline(Duration::from_secs(3600)));
        while let Some(input) = client.take_other() {
            proxy.input(&mut client, input, &|c, host, port, avoid| {
                let deadline = c.deadline(opts.timeout);
                path::exit_circuit_retrying(c, &dir, &config, host, port, avoid, deadline)
            });
        }
        proxy.circuit_events(&mut client);
    }
}

/// Builds an exit circuit for `host:port`, avoiding (and adding to) the given relays.
type Build<'a> = dyn Fn(
        &mut Client,
        &str,
        u16,
        &mut Vec<onion_dir::RsaIdentity>,
    ) -> Result<(usize, Vec<String>), String>
    + 'a;

struct Proxy {
    conns: Vec<Conn>,
    /// Live exit circuits, with the port they were built for.
    pool: Vec<(u16, usize)>,
    /// Relays that failed while building circuits: later paths leave them out.
    avoid: Vec<onion_dir::RsaIdentity>,
}

impl Proxy {
    fn input(&mut self, client: &mut Client, input: Input, build: &Build<'_>) {
        match input {
            Input::Accepted(sock) => {
                let _ = sock.set_nodelay(true);
                let _ = sock.set_write_timeout(Some(WRITE_TIMEOUT));
                if let Ok(reader) = sock.try_clone() {
                    let id = client.inbox().watch(reader);
                    self.conns.push(Conn {
                        id,
                        sock,
                        buf: Vec::new(),
                        up: Vec::new(),
                        state: State::Greeting,
                    });
                }
            }
            Input::Bytes(id, data) => {
                let Some(i) = self.conns.iter().position(|c| c.id == id) else {
                    return;
                };
                self.conns[i].buf.extend_from_slice(&data);
                if let Err(e) = self.advance(client, i, build) {
                    eprintln!("onion: SOCKS client: {e}");
                    self.close(client, i);
                }
            }
            Input::Closed(id, _) => {
                if let Some(i) = self.conns.iter().position(|c| c.id == id) {
                    self.close(client, i);
                }
            }
        }
    }

    /// Move connection `i` along with the bytes it has sent.
    fn advance(&mut self, client: &mut Client, i: usize, build: &Build<'_>) -> Result<(), String> {
        let c = &mut self.conns[i];
        if let State::Greeting = c.state {
            match socks::parse_greeting(&c.buf) {
                Ok(None) => return Ok(()),
                Ok(Some(n)) => {
                    c.buf.drain(..n);
                    write(&mut c.sock, &socks::NO_AUTH)?;
                    c.state = State::Request;
                }
                Err(e) => {
                    let _ = write(&mut c.sock, &socks::NO_METHOD);
                    return Err(e.to_string());
                }
            }
        }
        if let State::Request = c.state {
            let (n, target) = match socks::parse_request(&c.buf) {
                Ok(None) => return Ok(()),
                Ok(Some(r)) => r,
                Err(e) => {
                    let _ = write(&mut c.sock, &socks::reply(e.reply.unwrap_or(1)));
                    return Err(e.to_string());
                }
            };
            c.buf.drain(..n);
            let (circ, stream) = match self.begin(client, &target, build) {
                Ok(cs) => cs,
                Err(e) => {
                    let _ = write(&mut self.conns[i].sock, &socks::reply(1));
                    return Err(format!("{}:{}: {e}", target.host, target.port));
                }
            };
            let c = &mut self.conns[i];
            c.state = State::Connecting { circ, stream };
        }
        let c = &mut self.conns[i];
        let rest = std::mem::take(&mut c.buf);
        c.up.extend_from_slice(&rest);
        self.push_up(client, i)
    }

    /// A stream to `target` on a pooled circuit, or on a new one.
    fn begin(
        &mut self,
        client: &mut Client,
        target: &Target,
        build: &Build<'_>,
    ) -> Result<(usize, StreamId), String> {
        self.pool
            .retain(|&(_, c)| client.circs.get(c).is_some_and(|c| c.dead.is_none()));
        let circ = match self.pool.iter().find(|(p, _)| *p == target.port) {
            Some(&(_, c)) => c,
            None => {
                let (c, _) = build(client, &target.host, target.port, &mut self.avoid)?;
                self.pool.push((target.port, c));
                c
            }
        };
        let now = client.clock.now();
        let stream = client.circs[circ]
            .circ
            .begin(&target.host, target.port, BeginFlags(0), now)
            .map_err(|e| format!("begin: {e}"))?;
        Ok((circ, stream))
    }

    /// Hand the application's pending bytes to the circuit, as far as windows allow.
    fn push_up(&mut self, client: &mut Client, i: usize) -> Result<(), String> {
        let c = &mut self.conns[i];
        if let State::Open { circ, stream } = c.state {
            if !c.up.is_empty() {
                let n = client.circs[circ]
                    .circ
                    .send(stream, &c.up)
                    .map_err(|e| format!("send: {e}"))?;
                c.up.drain(..n);
            }
        }
        Ok(())
    }

    fn close(&mut self, client: &mut Client, i: usize) {
        let c = self.conns.swap_remove(i);
        if let State::Open { circ, stream } | State::Connecting { circ, stream } = c.state {
            if let Some(cc) = client.circs.get_mut(circ) {
                let _ = cc.circ.close_stream(stream);
            }
        }
        let _ = c.sock.shutdown(Shutdown::Both);
    }

    /// Route circuit events to the SOCKS connections; close those whose circuit died.
    fn circuit_events(&mut self, client: &mut Client) {
        let circs: Vec<usize> = self.pool.iter().map(|&(_, c)| c).collect();
        for circ in circs {
            while let Some(ev) = client.circs[circ].events.pop_front() {
                let (stream, ev) = match ev {
                    CircEvent::StreamConnected { stream, .. }
                    | CircEvent::Data { stream, .. }
                    | CircEvent::StreamEnded { stream, .. } => (stream, ev),
                    _ => continue,
                };
                let Some(i) = self.conns.iter().position(|c| match c.state {
                    State::Connecting {
                        circ: cc,
                        stream: s,
                    }
                    | State::Open {
                        circ: cc,
                        stream: s,
                    } => cc == circ && s == stream,
                    _ => false,
                }) else {
                    continue;
                };
                let ok = match ev {
                    CircEvent::StreamConnected { .. } => {
                        self.conns[i].state = State::Open { circ, stream };
                        write(&mut self.conns[i].sock, &socks::reply(0))
                            .and_then(|_| self.push_up(client, i))
                    }
                    CircEvent::Data { data, .. } => write(&mut self.conns[i].sock, &data),
                    CircEvent::StreamEnded { reason, .. } => {
                        if let State::Connecting { .. } = self.conns[i].state {
                            let _ =
                                write(&mut self.conns[i].sock, &socks::reply(socks_code(reason)));
                            Err(format!("stream refused: {}", end_reason(reason)))
                        } else {
                            Err(String::new())
                        }
                    }
                    _ => Ok(()),
                };
                if let Err(e) = ok {
                    if !e.is_empty() {
                        eprintln!("onion: SOCKS stream: {e}");
                    }
                    self.close(client, i);
                }
            }
            if let Some(why) = client.circs[circ].dead.clone() {
                eprintln!("onion: circuit lost: {why}");
                while let Some(i) = self.conns.iter().position(|c| {
                    matches!(c.state, State::Connecting { circ: cc, .. } | State::Open { circ: cc, .. } if cc == circ)
                }) {
                    if let State::Connecting { .. } = self.conns[i].state {
                        let _ = write(&mut self.conns[i].sock, &socks::reply(1));
                    }
                    self.close(client, i);
                }
            }
        }
        for i in 0..self.conns.len() {
            // A failure here is a dead circuit, reported when its death is noticed above.
            let _ = self.push_up(client, i);
        }
        let _ = client.flush();
    }
}

/// RFC 1928 reply code for a RELAY_END reason (tor-spec §6.3), as C tor's SocksPort maps it.
fn socks_code(reason: EndReason) -> u8 {
    match reason {
        EndReason::EXITPOLICY => 2,
        EndReason::RESOLVEFAILED => 4,
        EndReason::CONNECTREFUSED => 5,
        EndReason::TIMEOUT => 6,
        _ => 1,
    }
}

fn write(sock: &mut TcpStream, data: &[u8]) -> Result<(), String> {
    sock.write_all(data).map_err(|e| format!("write: {e}"))
}
