//! Entry guards for every circuit the CLI builds (guard-spec §4), run on onion-dir's sans-IO
//! [`GuardMgr`]: exit circuits (`onion get`, `onion socks`) and onion-service circuits (to
//! HSDirs, introduction and rendezvous points) all enter the network through the same few
//! primary guards, as C tor's do, instead of through a fresh random relay per circuit, which
//! would hand a hostile relay a chance at being first hop on every circuit.
//!
//! This module is the embedding the guard manager's documentation describes: it feeds it each
//! new directory, asks it for the guard of each circuit, reports whether the circuit was
//! built (and whether a failure was the guard's), and keeps the sampled guards in the data
//! directory's `state` file (guard-spec A.5 `Guard` lines, as in C tor's `state`), so that a
//! later run starts from the same guards. Without a data directory the guards last as long
//! as the process.
//!
//! Next to the guard manager it keeps the process's vanguards-lite layer-2 set (Tor proposal
//! 333, [`onion_dir::select::vanguards`]): the second hop of every onion-service circuit comes from
//! these few relays, which rotate over days and, as in C tor, are never written to disk.

use std::time::{SystemTime, UNIX_EPOCH};

use onion_dir::netview::RelayIdx;
use onion_dir::select::guard::{CircState, GuardMgr, GuardParams, GuardPick, GuardUsage};
use onion_dir::select::path::{Exclusions, ExitRequest, Path, PathOptions, PathSelector};
use onion_dir::select::vanguards::{self, Layer2Guards, VanguardParams, VanguardShape};
use rand_core::OsRng;

use super::bootstrap::Directory;
use super::cache::Cache;

/// The data-directory file holding the guard state (C tor's name for its state file).
const STATE_FILE: &str = "state";

/// Wall-clock seconds since the Unix epoch: guard-spec dates (sampled_on, confirmed_on) are
/// wall-clock dates that outlive the process.
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// How many times a path is drawn again when its guard would not be a primary guard
/// although a primary guard could serve another path (see `Guards::ticket`).
const REPICKS: usize = 4;

/// A circuit's guard, to report the circuit's fate with.
pub struct GuardTicket {
    pick: GuardPick,
    /// The guard is not primary because no primary guard could serve this path.
    nothing_better: bool,
}

/// The guard manager of one process, where it is kept, and the process's layer-2 vanguards.
pub struct Guards {
    mgr: GuardMgr,
    cache: Option<Cache>,
    /// In memory only: a new process draws a new set (proposal 333 §1).
    l2: Layer2Guards,
}

impl Default for Guards {
    fn default() -> Self {
        Guards {
            mgr: GuardMgr::new(GuardParams::default()),
            cache: None,
            l2: Layer2Guards::default(),
        }
    }
}

impl Guards {
    /// Keep the guards in `cache`'s `state` file from now on, starting from the guards stored
    /// there. A state file that does not parse is reported and replaced (a fresh sample is
    /// safer than no client).
    pub fn attach(&mut self, cache: Option<&Cache>) {
        let Some(cache) = cache else { return };
        if self.cache.is_some() {
            // Attached already (a later directory refresh): memory is ahead of the file.
            return;
        }
        if let Some(text) = cache.read(STATE_FILE) {
            match GuardMgr::from_state_str(self.mgr.params().clone(), &text) {
                Ok(mgr) => self.mgr = mgr,
                Err(e) => eprintln!("onion: guard state file ignored: {e}"),
            }
        }
        self.cache = Some(cache.clone());
    }

    /// guard-spec §4.10: a new directory. Its consensus gives the parameters (param-spec
    /// §11) and which guards are listed, whether or not we hold their descriptors (§4.12);
    /// its relays with descriptors are those new guards are sampled from.
    ///
    /// The layer-2 vanguards follow the same directory: their parameters come from the
    /// consensus, members that expired or left are replaced (proposal 333).
    pub fn on_directory(&mut self, dir: &Directory) {
        let now = unix_now();
        let params = GuardParams::default().with_consensus_params(dir.param_entries());
        self.mgr.set_params(params);
        let listed: std::collections::HashSet<onion_dir::RsaIdentity> =
            dir.listed_guards.iter().copied().collect();
        self.mgr.update_listed_ids(
            onion_dir::Timestamp::from_unix(now),
            &dir.view,
            &listed,
            &mut OsRng,
        );
        self.l2
            .set_params(VanguardParams::from_consensus_params(dir.param_entries()));
        self.update_l2(&PathSelector::new(&dir.view), now);
        self.save();
    }

    /// Bring the layer-2 set up to date with `sel`'s view at `now`, with a progress line on
    /// stderr when it changes.
    fn update_l2(&mut self, sel: &PathSelector<'_>, now: u64) {
        if !self.l2.params().enabled {
            return;
        }
        let report = self.l2.update(
            onion_dir::Timestamp::from_unix(now),
            sel,
            &Exclusions::none(),
            &mut OsRng,
        );
        if report.changed() {
            let names: Vec<String> = self
                .l2
                .guards()
                .iter()
                .map(|g| {
                    sel.view()
                        .by_rsa_id(&g.id)
                        .and_then(|i| sel.view().relay(i))
                        .map_or_else(|| g.id.to_string(), |r| r.nickname.clone())
                })
                .collect();
            eprintln!(
                "onion: layer-2 vanguards (vanguards-lite): {}",
                names.join(", ")
            );
        }
    }

    /// An exit path whose guard comes from the guard manager (exit first, then the guard
    /// avoiding its family and subnet, then the middle; path-spec §2.2, guard-spec §4.6).
    pub fn exit_path(
        &mut self,
        sel: &PathSelector<'_>,
        request: ExitRequest,
        opts: &PathOptions<'_>,
    ) -> Result<(Path, GuardTicket), String> {
        let mut tries = 0;
        loop {
            tries += 1;
            let (path, pick) = self
                .mgr
                .exit_path(
                    onion_dir::Timestamp::from_unix(unix_now()),
                    sel,
                    request,
                    3,
                    opts,
                    &mut OsRng,
                )
                .map_err(|e| e.to_string())?;
            let avoid: Vec<RelayIdx> = path.hops().last().copied().into_iter().collect();
            if let Some(ticket) = self.ticket(sel, pick, &avoid, opts, tries < REPICKS) {
                return Ok((path, ticket));
            }
        }
    }

    /// An internal path of `len` hops ending at `target` (or at a random middle), whose guard
    /// comes from the guard manager (path-spec §2.2.2; guard-spec §4.6 with the last hop as
    /// one the guard must not share a family or subnet with).
    pub fn internal_path(
        &mut self,
        sel: &PathSelector<'_>,
        len: usize,
        target: Option<RelayIdx>,
        opts: &PathOptions<'_>,
    ) -> Result<(Path, GuardTicket), String> {
        let mut tries = 0;
        loop {
            tries += 1;
            // The last hop first (a middle if none is given), so that the guard can avoid it.
            let last = match target {
                Some(t) => t,
                None => sel
                    .choose_middle(opts, &[], &mut OsRng)
                    .map_err(|e| e.to_string())?,
            };
            // A fixed target cannot be drawn again: take what the manager gives for it.
            let redraw = target.is_none() && tries < REPICKS;
            let Some(ticket) = self.guard(sel, GuardUsage::Data, &[last], opts, redraw)? else {
                continue;
            };
            let path = sel.internal_path(len, Some(last), Some(ticket.pick.idx), opts, &mut OsRng);
            return self.complete(path, ticket);
        }
    }

    /// An onion-service path of `shape` (proposal 333 §1: `G -> L2 -> last` for the client's
    /// rendezvous circuit, `G -> L2 -> M -> last` for the others) ending at `target` (or at a
    /// random relay), with its guard from the guard manager and its second hop from the
    /// layer-2 set ([`onion_dir::select::vanguards::vanguard_path`]).
    ///
    /// As C tor does for vanguard circuits, the guard is asked for with no restriction from
    /// the last hop: a rendezvous point or introduction point chosen by someone else must
    /// not be able to steer us off our primary guards. When the consensus turns vanguards-lite
    /// off (`vanguards-lite-enabled=0`) the path has the same length with an ordinary middle
    /// as second hop.
    pub fn vanguard_path(
        &mut self,
        sel: &PathSelector<'_>,
        shape: VanguardShape,
        target: Option<RelayIdx>,
        opts: &PathOptions<'_>,
    ) -> Result<(Path, GuardTicket), String> {
        if !self.l2.params().enabled {
            return self.internal_path(sel, shape.path_len(), target, opts);
        }
        // Expire on time even when no new directory came since the last update.
        self.update_l2(sel, unix_now());
        // No family or subnet restriction from the last hop (so nothing to draw again); only
        // the caller's exclusions (relays seen failing) apply.
        let ticket = self
            .guard(sel, GuardUsage::Data, &[], opts, false)?
            .ok_or("no guard")?;
        let path = vanguards::vanguard_path(
            sel,
            &self.l2,
            shape,
            target,
            ticket.pick.idx,
            opts,
            &mut OsRng,
        );
        self.complete(path, ticket)
    }

    /// A directory guard (guard-spec §4.6 `GuardUsage::Dir`) for a one-hop circuit.
    pub fn dir_guard(&mut self, sel: &PathSelector<'_>) -> Result<(RelayIdx, GuardTicket), String> {
        let ticket = self
            .guard(sel, GuardUsage::Dir, &[], &PathOptions::default(), false)?
            .ok_or("no directory guard")?;
        Ok((ticket.pick.idx, ticket))
    }

    /// A guard from the manager for a circuit whose other hops must not share a relay,
    /// family or subnet with it (`avoid`) and that must not go through `opts.exclude`; `None`
    /// when [`Guards::ticket`] asks for the path to be drawn again.
    fn guard(
        &mut self,
        sel: &PathSelector<'_>,
        usage: GuardUsage,
        avoid: &[RelayIdx],
        opts: &PathOptions<'_>,
        redraw: bool,
    ) -> Result<Option<GuardTicket>, String> {
        let pick = self
            .mgr
            .select_excluding(
                onion_dir::Timestamp::from_unix(unix_now()),
                sel.view(),
                usage,
                avoid,
                opts.exclude,
                sel.config(),
                &mut OsRng,
            )
            .map_err(|e| e.to_string())?;
        Ok(self.ticket(sel, pick, avoid, opts, redraw))
    }

    /// The rest of a path chosen around `ticket`'s guard: on failure the manager forgets the
    /// guard's circuit (nothing was tried through it).
    fn complete<E: std::fmt::Display>(
        &mut self,
        path: Result<Path, E>,
        ticket: GuardTicket,
    ) -> Result<(Path, GuardTicket), String> {
        match path {
            Ok(path) => Ok((path, ticket)),
            Err(e) => {
                let _ = self.mgr.circuit_closed(
                    onion_dir::Timestamp::from_unix(unix_now()),
                    ticket.pick.circ,
                );
                Err(e.to_string())
            }
        }
    }

    /// Whether to build through `pick`: yes through a primary guard; through another guard
    /// only if no primary guard could have served this path (excluded by the caller, or the
    /// same relay, family or subnet as a hop of `avoid`, path-spec §2.2), for then no better
    /// guard can ever beat it for this circuit and it may be used once built (guard-spec §4.9
    /// counts only circuits that obey the same restrictions as better). Otherwise, if
    /// `redraw`, the pick is returned to the manager and `None` asks for another path; if
    /// not, the pick is kept and the circuit, once built, will wait for a better guard,
    /// which this CLI treats as a failed attempt.
    fn ticket(
        &mut self,
        sel: &PathSelector<'_>,
        pick: GuardPick,
        avoid: &[RelayIdx],
        opts: &PathOptions<'_>,
        redraw: bool,
    ) -> Option<GuardTicket> {
        if pick.state == CircState::UsableOnCompletion {
            return Some(GuardTicket {
                pick,
                nothing_better: false,
            });
        }
        let view = sel.view();
        let primary_fits = self.mgr.primary().iter().any(|id| {
            view.by_rsa_id(id)
                .is_some_and(|idx| !opts.exclude.contains(idx) && sel.compatible(idx, avoid))
        });
        if primary_fits && redraw {
            let _ = self
                .mgr
                .circuit_closed(onion_dir::Timestamp::from_unix(unix_now()), pick.circ);
            return None;
        }
        Some(GuardTicket {
            pick,
            nothing_better: !primary_fits,
        })
    }

    /// guard-spec §4.8: the circuit was built, so its guard is reachable (and confirmed).
    /// Returns whether it may carry traffic now. A circuit through a non-primary guard waits
    /// while a better guard may still work (§4.9); this CLI builds one circuit at a time and
    /// does not wait: such a circuit is usable only if no primary guard could have served
    /// its path ([`GuardTicket`]); otherwise the caller destroys it and builds another,
    /// which the manager routes through the better guard. Either way the manager then
    /// forgets the circuit: what happens to it later says nothing more about its guard.
    pub fn built(&mut self, ticket: &GuardTicket) -> bool {
        let now = unix_now();
        let circ = ticket.pick.circ;
        let usable =
            match self
                .mgr
                .circuit_succeeded(onion_dir::Timestamp::from_unix(now), circ, &mut OsRng)
            {
                Ok(CircState::Complete) => true,
                Ok(_) => ticket.nothing_better,
                Err(_) => false,
            };
        let _ = self
            .mgr
            .circuit_closed(onion_dir::Timestamp::from_unix(now), circ);
        self.save();
        usable
    }

    /// The circuit could not be built: guard-spec §4.7 if its guard failed (no channel, no
    /// CREATED), otherwise it says nothing about the guard.
    pub fn failed(&mut self, ticket: &GuardTicket, guard_failed: bool) {
        let circ = ticket.pick.circ;
        let now = unix_now();
        let _ = if guard_failed {
            self.mgr
                .circuit_failed(onion_dir::Timestamp::from_unix(now), circ)
        } else {
            self.mgr
                .circuit_closed(onion_dir::Timestamp::from_unix(now), circ)
        };
        self.save();
    }

    /// The primary guards.
    #[cfg(test)]
    pub fn primary(&self) -> &[onion_dir::RsaIdentity] {
        self.mgr.primary()
    }

    /// Write the state file, if there is a data directory. Its lines other than `Guard`
    /// lines (C tor's `state` keeps more there, should the data directory be shared with it)
    /// are kept as they were. The file is replaced atomically and readable by the user only
    /// ([`Cache::write`]). A failed write is reported and the run goes on (the guards are
    /// still right in memory).
    fn save(&self) {
        if let Some(cache) = &self.cache {
            let old = cache.read(STATE_FILE).unwrap_or_default();
            let text = merged_state(&old, &self.mgr.to_state_string());
            if let Err(e) = cache.write(STATE_FILE, text.as_bytes()) {
                eprintln!("onion: cannot write the guard state: {e}");
            }
        }
    }
}

/// The state file `old` with its `Guard` lines replaced by `guards` (guard-spec A.5 lines),
/// its other lines kept in order.
fn merged_state(old: &str, guards: &str) -> String {
    let mut out: String = old
        .lines()
        .filter(|l| !l.starts_with("Guard "))
        .flat_map(|l| [l, "\n"])
        .collect();
    out.push_str(guards);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use onion_dir::netview::NetView;
    use onion_dir::policy::ExitTarget;
    use onion_dir::select::path::PathConfig;
    use onion_dir::{consensus, microdesc, synth};

    /// A 300-relay synthetic network as a verified directory.
    fn directory() -> Directory {
        let net = synth::network(300, 7);
        let cons = consensus::parse(&net.consensus).unwrap().assume_verified();
        let mds = microdesc::parse_many(&net.microdescs).unwrap();
        let view = NetView::from_microdescs(&cons, &mds).unwrap();
        let d = onion_client::dir::Directory::from_consensus(
            &cons,
            view,
            onion_client::dir::DirMode::Micro,
            300,
            String::new(),
        );
        Directory::new(std::sync::Arc::new(d))
    }

    /// The synthetic network's addresses crowd few /16s; without the subnet rule (as on a
    /// testing network) a path's last hop conflicts with at most a family member.
    fn config() -> PathConfig {
        PathConfig {
            enforce_distinct_subnets: false,
            ..PathConfig::default()
        }
    }

    /// A circuit that excludes every primary guard (the caller saw them all fail) is built
    /// through another guard and usable: no primary guard could serve it.
    #[test]
    fn excluding_every_primary_still_gives_a_usable_circuit() {
        let dir = directory();
        let (tmp, _cache, mut g) = attached("exclude", &dir);
        let primary = g.primary().to_vec();
        let exclude = Exclusions::from_ids(&dir.view, primary.iter());
        let opts = PathOptions {
            exclude: &exclude,
            ..PathOptions::default()
        };
        let sel = PathSelector::with_config(&dir.view, config());
        let (path, ticket) = g.internal_path(&sel, 3, None, &opts).unwrap();
        let first = dir.view.relay(path.hops()[0]).unwrap().rsa_id;
        assert!(!primary.contains(&first));
        assert!(g.built(&ticket), "nothing better exists for this circuit");
        let _ = std::fs::remove_dir_all(&tmp);
    }

    /// Lines of the state file that are not ours survive a save; ours are replaced.
    #[test]
    fn saving_keeps_other_state_lines() {
        let old = "TorVersion Tor 0.4.9\nGuard in=default rsa_id=AA old\nLastWritten 2026\n";
        let new = "Guard in=default rsa_id=BB\n";
        assert_eq!(
            merged_state(old, new),
            "TorVersion Tor 0.4.9\nLastWritten 2026\nGuard in=default rsa_id=BB\n"
        );
        assert_eq!(merged_state("", new), new);
    }

    /// Guards kept in a fresh data directory (under the temporary directory, named after the
    /// test), given `dir`.
    fn attached(test: &str, dir: &Directory) -> (std::path::PathBuf, Cache, Guards) {
        let tmp = std::env::temp_dir().join(format!("onion-{test}-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        let cache = Cache::open(&tmp).unwrap();
        let mut g = Guards::default();
        g.attach(Some(&cache));
        g.on_directory(dir);
        (tmp, cache, g)
    }

    fn first_hops(g: &mut Guards, dir: &Directory, n: usize) -> Vec<onion_dir::RsaIdentity> {
        let sel = PathSelector::with_config(&dir.view, config());
        (0..n)
            .map(|i| {
                let (path, circ) = if i % 2 == 0 {
                    g.exit_path(
                        &sel,
                        ExitRequest::Target(ExitTarget::Port(443)),
                        &PathOptions::default(),
                    )
                    .unwrap()
                } else {
                    g.internal_path(&sel, 3, None, &PathOptions::default())
                        .unwrap()
                };
                assert!(g.built(&circ), "circuit {i}");
                dir.view.relay(path.hops()[0]).unwrap().rsa_id
            })
            .collect()
    }

    /// Every circuit, exit or internal, enters through a primary guard; the guards survive a
    /// restart through the state file; a guard that fails is left for the other primaries.
    #[test]
    fn circuits_enter_through_persistent_primary_guards() {
        let dir = directory();
        let (tmp, cache, mut g) = attached("guards", &dir);
        let primary = g.primary().to_vec();
        assert_eq!(primary.len(), 3, "three primary guards (guard-spec §4.6)");
        let hops = first_hops(&mut g, &dir, 40);
        assert!(hops.iter().all(|h| primary.contains(h)), "{hops:?}");
        // Without guards, 40 circuits over ~90 Guard-flagged relays would use many more.
        let mut distinct = hops.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert!(distinct.len() <= 3);
        let state = cache.read(STATE_FILE).expect("state written");
        assert!(
            state.lines().any(|l| l.contains("confirmed_on=")),
            "{state}"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode =
                |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(
                mode(&tmp.join(STATE_FILE)),
                0o600,
                "the state file is private"
            );
            assert_eq!(mode(&tmp), 0o700);
        }

        // A new process with the same data directory: the same primary guards.
        let mut again = Guards::default();
        again.attach(Some(&cache));
        again.on_directory(&dir);
        assert_eq!(again.primary(), primary.as_slice());

        // The first guard fails: later circuits go through the other primary guards.
        let sel = PathSelector::with_config(&dir.view, config());
        let failing = loop {
            let (path, circ) = again
                .internal_path(&sel, 3, None, &PathOptions::default())
                .unwrap();
            let first = dir.view.relay(path.hops()[0]).unwrap().rsa_id;
            if first == primary[0] {
                again.failed(&circ, true);
                break first;
            }
            assert!(again.built(&circ));
        };
        let later = first_hops(&mut again, &dir, 20);
        assert!(!later.contains(&failing), "{later:?}");
        assert!(later.iter().all(|h| primary.contains(h)));
        let _ = std::fs::remove_dir_all(&tmp);
    }

    /// Onion-service circuits have proposal 333's shapes: a primary guard, then one of the
    /// four layer-2 vanguards, then (4-hop shape) a middle, then the target; the layer-2 set
    /// is not kept across processes, and a member whose lifetime ran out is replaced before
    /// the next circuit.
    #[test]
    fn onion_service_circuits_go_through_layer2_vanguards() {
        let dir = directory();
        let (tmp, cache, mut g) = attached("l2", &dir);
        assert_eq!(g.l2.len(), 4, "guard-hs-l2-number defaults to 4");
        let l2: Vec<onion_dir::RsaIdentity> = g.l2.guards().iter().map(|x| x.id).collect();
        let primary = g.primary().to_vec();
        let sel = PathSelector::with_config(&dir.view, config());
        let opts = PathOptions {
            need_stable: true,
            ..PathOptions::default()
        };
        let id = |i: RelayIdx| dir.view.relay(i).unwrap().rsa_id;
        let mut second_hops = Vec::new();
        for i in 0..40u32 {
            let (shape, target) = if i % 2 == 0 {
                (VanguardShape::Short, None)
            } else {
                (VanguardShape::Long, Some(RelayIdx(i * 7 % 300)))
            };
            let (path, ticket) = g.vanguard_path(&sel, shape, target, &opts).unwrap();
            assert!(g.built(&ticket));
            let h = path.hops();
            assert_eq!(h.len(), shape.path_len());
            assert!(primary.contains(&id(h[0])), "guard {:?}", id(h[0]));
            assert!(l2.contains(&id(h[1])), "second hop from the layer-2 set");
            assert!(h[1] != h[0] && Some(h[1]) != h.last().copied());
            if let Some(t) = target {
                assert_eq!(h.last(), Some(&t));
                assert!(h[2] != h[0] && h[2] != h[1] && h[2] != t);
            } else {
                assert_ne!(h[2], h[0]);
            }
            second_hops.push(id(h[1]));
        }
        second_hops.sort_unstable();
        second_hops.dedup();
        assert!(second_hops.len() > 1, "the pick spreads over the set");

        // Never written to disk: a new process with the same data directory starts empty.
        let state = cache.read(STATE_FILE).unwrap_or_default();
        let mut again = Guards::default();
        again.attach(Some(&cache));
        assert!(again.l2.is_empty(), "{state}");

        // A member that expires is replaced before the next circuit, without a new directory.
        g.l2.set_params(VanguardParams {
            l2_lifetime_min: 1,
            l2_lifetime_max: 1,
            ..VanguardParams::default()
        });
        g.l2.clear();
        g.update_l2(&sel, unix_now());
        let first_added = g.l2.guards()[0].added_at;
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let (_, ticket) = g
            .vanguard_path(&sel, VanguardShape::Short, None, &opts)
            .unwrap();
        g.failed(&ticket, false);
        assert!(g.l2.guards().iter().all(|x| x.added_at > first_added));
        assert_eq!(g.l2.len(), 4);
        let _ = std::fs::remove_dir_all(&tmp);
    }
}
