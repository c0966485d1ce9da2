// The periodic loop and what its health endpoint reports about it.

// Tracks the last finished cycle. The loop is "live" while cycles keep finishing
// (successfully or not) within `staleAfterMs`; a wedged loop fails liveness.
export function loopState({ now = () => Date.now(), staleAfterMs }) {
  const startedAt = now();
  let lastFinishedAt = null;
  let lastError = null;
  return {
    finished(err = null) {
      lastFinishedAt = now();
      lastError = err ? err.message : null;
    },
    live() {
      const since = lastFinishedAt ?? startedAt;
      return now() - since <= staleAfterMs;
    },
    snapshot() {
      return { lastFinishedAt: lastFinishedAt && new Date(lastFinishedAt).toISOString(), lastError };
    },
  };
}

export function startLoop({ intervalMs, cycle, state, log = () => {} }) {
  let timer;
  let stopped = false;
  async function tick() {
    try {
      await cycle();
      state.finished();
    } catch (err) {
      state.finished(err);
      log("warn", `check cycle failed: ${err.message}`);
    }
    if (!stopped) timer = setTimeout(tick, intervalMs);
  }
  timer = setTimeout(tick, 0);
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}
