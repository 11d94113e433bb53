// Views that follow the server without a reload: ask every few seconds, redraw only when the
// answer changed (as the kiosk's staff panel does), so a button under a finger or a half-typed
// reason stays where it is while nothing happened.

export const POLL_MS = 4000;

// `load()` fetches, `draw(data)` shows; `draw(null, err)` when a fetch failed (once per
// distinct failure). Returns { first, refresh, stop }: `first` resolves after the first
// draw (a view awaits it before it is shown), `refresh()` asks at once (after an action),
// `stop()` ends it (the view's cleanup). Hidden tabs do not poll.
export function watch(load, draw, every = POLL_MS) {
  let shown = null;
  let stopped = false;
  let asking = null;
  let again = null; // a refresh asked for while a fetch was under way (its answer may be old)
  const ask = () => {
    if (stopped) return Promise.resolve();
    if (asking) {
      again = again || asking.then(() => {
        again = null;
        return ask();
      });
      return again;
    }
    asking = (async () => {
      let key;
      let data = null;
      let error = null;
      try {
        data = await load();
        key = JSON.stringify(data);
      } catch (err) {
        error = err;
        key = `error:${err.status}:${err.message}`;
      }
      if (!stopped && key !== shown) {
        shown = key;
        draw(data, error);
      }
    })().finally(() => {
      asking = null;
    });
    return asking;
  };
  const timer = setInterval(() => {
    if (document.visibilityState === "visible") ask();
  }, every);
  return {
    first: ask(),
    refresh: ask,
    stop() {
      stopped = true;
      clearInterval(timer);
    },
  };
}

const drawn = new WeakMap();

// Redraw one part of a page only when what it shows changed.
export function drawIfChanged(el, value, build) {
  const key = JSON.stringify(value);
  if (drawn.get(el) === key) return false;
  drawn.set(el, key);
  el.replaceChildren(...[build(value)].flat().filter((x) => x !== null && x !== undefined));
  return true;
}
