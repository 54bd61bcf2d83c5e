//! The onion-service roles of a relay, as an [`Edge`] handler of the simulated network:
//! introduction point ([`IntroPoint`]: ESTABLISH_INTRO checked against the circuit's `KH`,
//! INTRODUCE1 forwarded as INTRODUCE2 and acknowledged, rend-spec-v3 §3.1, §3.2) and
//! rendezvous point ([`RendPoint`]: ESTABLISH_RENDEZVOUS, then RENDEZVOUS1 answered with
//! RENDEZVOUS2 and the two circuits joined, §4.1, §4.2).

use onion_cell::RelayCmd;
use onion_circuit::relay::RelayEvent;
use onion_hs::cellmsg;
use onion_hs::relay::{IntroPoint, RendPoint};

use crate::circuit::net::{Edge, RelayCx};

/// A relay's introduction-point and rendezvous-point state; circuits are this relay's
/// circuit indices.
#[derive(Debug, Default)]
pub struct HsRoles {
    intro: IntroPoint<usize>,
    rend: RendPoint<usize>,
}

/// Send a relay message on circuit `circ` of the relay, toward its client.
fn send(cx: &mut RelayCx<'_>, circ: usize, cmd: RelayCmd, body: &[u8]) {
    let r = match cellmsg::to_relay_msg(cmd, body) {
        Ok(m) => match cx.circ(circ) {
            Some(c) => c.send_msg(None, &m).map_err(|e| e.to_string()),
            None => Err("circuit closed".to_owned()),
        },
        Err(e) => Err(e.to_string()),
    };
    if let Err(e) = r {
        cx.say(format!("cannot send {cmd}: {e}"));
    }
}

impl HsRoles {
    fn handle(&mut self, cx: &mut RelayCx<'_>, circ: usize, cmd: RelayCmd, body: &[u8]) {
        if cmd == RelayCmd::ESTABLISH_INTRO {
            let Some(kh) = cx.circ(circ).map(|c| *c.kh()) else {
                return;
            };
            match self.intro.handle_establish_intro(circ, &kh, body) {
                Ok(reply) => {
                    cx.say(
                        "intro point: ESTABLISH_INTRO verified (auth key, signature, MAC over KH)",
                    );
                    send(cx, circ, RelayCmd::INTRO_ESTABLISHED, &reply);
                }
                Err(e) => cx.say(format!("intro point: ESTABLISH_INTRO refused: {e}")),
            }
        } else if cmd == RelayCmd::INTRODUCE1 {
            let routing = self.intro.handle_introduce1(body);
            match &routing.to_service {
                Some((svc, b2)) => {
                    cx.say("intro point: INTRODUCE1 → INTRODUCE2 on the service's circuit, INTRODUCE_ACK to the client");
                    send(cx, *svc, RelayCmd::INTRODUCE2, b2);
                }
                None => cx.say("intro point: INTRODUCE1 for an unknown service"),
            }
            send(cx, circ, RelayCmd::INTRODUCE_ACK, &routing.ack);
        } else if cmd == RelayCmd::ESTABLISH_RENDEZVOUS {
            match self.rend.handle_establish_rendezvous(circ, body) {
                Ok(()) => {
                    cx.say("rendezvous point: cookie registered");
                    send(cx, circ, RelayCmd::RENDEZVOUS_ESTABLISHED, &[]);
                }
                Err(e) => cx.say(format!("rendezvous point: refused: {e}")),
            }
        } else if cmd == RelayCmd::RENDEZVOUS1 {
            match self.rend.handle_rendezvous1(circ, body) {
                Ok(j) => {
                    // RENDEZVOUS2 is queued before the join, so it is the client's next cell.
                    send(cx, j.client, RelayCmd::RENDEZVOUS2, &j.rendezvous2);
                    if cx.splice(j.client, j.service) {
                        cx.say("rendezvous point: RENDEZVOUS1 matches the cookie: RENDEZVOUS2 to the client, circuits joined");
                    } else {
                        cx.say(
                            "rendezvous point: RENDEZVOUS1 matched, but a circuit cannot be joined",
                        );
                    }
                }
                Err(e) => cx.say(format!("rendezvous point: RENDEZVOUS1 refused: {e}")),
            }
        }
    }
}

impl Edge for HsRoles {
    fn on_event(
        &mut self,
        cx: &mut RelayCx<'_>,
        circ: usize,
        ev: RelayEvent,
    ) -> Option<RelayEvent> {
        match ev {
            RelayEvent::Msg { stream, msg } => {
                let cmd = msg.cmd();
                let ours = [
                    RelayCmd::ESTABLISH_INTRO,
                    RelayCmd::INTRODUCE1,
                    RelayCmd::ESTABLISH_RENDEZVOUS,
                    RelayCmd::RENDEZVOUS1,
                ];
                if stream.is_some() || !ours.contains(&cmd) {
                    return Some(RelayEvent::Msg { stream, msg });
                }
                match cellmsg::body_of(&msg) {
                    Ok(body) => self.handle(cx, circ, cmd, &body),
                    Err(e) => cx.say(format!("{cmd} dropped: {e}")),
                }
                None
            }
            RelayEvent::Closed { error } => {
                self.intro.circuit_closed(circ);
                Some(RelayEvent::Closed { error })
            }
            other => Some(other),
        }
    }
}
