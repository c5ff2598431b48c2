// The cost-matrix grid: one checkbox per (true class, predicted class) cell, rows the true class, each
// cell coloured by its cost (legend below the grid). data: {names: [...], matrix: [[cost]]}, costs >= 0.
// A click on a cell's box toggles it between free (0) and cost 1 (a cell of another cost becomes free);
// the cell last clicked or reached with Tab is the selected one, and its cost is typed in the "cost of"
// box below the grid (Enter applies; shift-click selects a cell without toggling it). Every change
// sends the whole matrix as the trigger "matrix": a one-shot event, so the server hears every change,
// also one that repeats an earlier matrix.
export default function (component) {
  const { data, setTriggerValue, parentElement } = component;
  const names = data.names;
  let root = parentElement.querySelector("div.cost-grid");
  if (!root || root.dataset.names !== JSON.stringify(names)) {
    if (root) root.remove();
    root = build(names);
    parentElement.appendChild(root);
  }
  root.send = setTriggerValue;  // the latest renderer's sender
  root.weights = data.matrix.map((row) => row.slice());
  show(root);
}

function build(names) {
  const root = document.createElement("div");
  root.className = "cost-grid";
  root.dataset.names = JSON.stringify(names);
  const table = document.createElement("table");
  const head = table.createTHead().insertRow();
  head.appendChild(cell("th", "true \\ predicted", "corner"));
  for (const name of names) head.appendChild(cell("th", name, "col"));
  const body = table.createTBody();
  names.forEach((rowName, j) => {
    const row = body.insertRow();
    row.appendChild(cell("th", rowName, "row"));
    names.forEach((colName, k) => {
      const box = document.createElement("input");
      box.type = "checkbox";
      box.dataset.j = j;
      box.dataset.k = k;
      box.disabled = j === k;
      box.setAttribute("aria-label", `${rowName} → ${colName}`);
      const td = row.insertCell();
      td.appendChild(box);
      td.appendChild(document.createElement("span")).className = "w";
    });
  });
  root.appendChild(table);
  root.appendChild(editor());
  root.appendChild(legend());
  listen(root, table, names);
  return root;
}

function editor() {
  const box = document.createElement("div");
  box.className = "editor";
  const label = document.createElement("label");
  label.append("cost of ", Object.assign(document.createElement("span"), { className: "which" }), " ");
  const input = Object.assign(document.createElement("input"), { type: "number", min: "0", step: "any" });
  input.setAttribute("aria-label", "cost of the selected cell");
  label.appendChild(input);
  box.append(label, Object.assign(document.createElement("span"), { className: "note" }));
  return box;
}

function legend() {
  const box = document.createElement("div");
  box.className = "legend";
  box.append("cost: ", Object.assign(document.createElement("span"), { className: "low" }),
             Object.assign(document.createElement("span"), { className: "bar" }),
             Object.assign(document.createElement("span"), { className: "high" }));
  return box;
}

function listen(root, table, names) {
  const input = root.querySelector(".editor input");
  table.addEventListener("change", (event) => {
    const box = event.target;
    root.weights[box.dataset.j][box.dataset.k] = box.checked ? 1 : 0;
    send(root);
  });
  table.addEventListener("click", (event) => {
    const box = event.target.closest("td")?.querySelector("input");
    if (!box || box.disabled) return;
    if (event.target === box && event.shiftKey) {  // select only: no toggle
      event.preventDefault();
      select(root, box);
      input.focus();
    } else if (event.target !== box) {  // a click beside the box selects the cell
      box.focus();
    }
  });
  table.addEventListener("focusin", (event) => select(root, event.target));
  const commit = () => {
    const cost = typed(input.value);
    const note = root.querySelector(".editor .note");
    const at = root.selected;
    note.textContent = at && cost === null ? "a cost is a number ≥ 0 (0: free)" : "";
    if (!at || cost === null || cost === root.weights[at.j][at.k]) return;
    root.weights[at.j][at.k] = cost;
    send(root);
  };
  input.addEventListener("change", commit);
  input.addEventListener("keydown", (event) => { if (event.key === "Enter") commit(); });
}

function typed(text) {
  const value = text.trim() === "" ? NaN : Number(text);
  return Number.isFinite(value) && value >= 0 ? value : null;
}

function select(root, box) {
  if (!(box instanceof HTMLInputElement) || box.type !== "checkbox" || box.disabled) return;
  root.selected = { j: Number(box.dataset.j), k: Number(box.dataset.k), name: box.getAttribute("aria-label") };
  show(root);
}

function send(root) {
  show(root);
  root.send("matrix", root.weights.map((row) => row.slice()));
}

// Boxes, colours, the selected cell's cost and the legend, from root.weights.
function show(root) {
  const top = Math.max(1, ...root.weights.flat());
  for (const box of root.querySelectorAll("td input")) {
    const w = root.weights[box.dataset.j][box.dataset.k];
    box.checked = w > 0;
    const td = box.parentElement;
    td.style.background = w > 0 ? shade(w / top) : "";
    td.querySelector(".w").textContent = w > 0 && w !== 1 ? short(w) : "";
    td.title = box.disabled ? "a correct prediction cannot cost"
      : `${box.getAttribute("aria-label")}: cost ${short(w)} (shift-click to select without toggling)`;
    td.classList.toggle("selected", root.selected?.j === Number(box.dataset.j)
                                    && root.selected?.k === Number(box.dataset.k));
  }
  const input = root.querySelector(".editor input");
  const at = root.selected;
  root.querySelector(".editor .which").textContent = at ? `${at.name}:` : "(click a cell):";
  input.disabled = !at;
  if (at && input.getRootNode().activeElement !== input) {  // never overwrite what is being typed
    input.value = String(root.weights[at.j][at.k]);
  }
  root.querySelector(".legend .low").textContent = "0";
  root.querySelector(".legend .high").textContent = short(top);
  root.querySelector(".legend .bar").style.background = `linear-gradient(to right, ${shade(0)}, ${shade(1)})`;
}

function shade(fraction) {
  const percent = Math.round(12 + 68 * Math.min(1, Math.max(0, fraction)));
  return `color-mix(in srgb, var(--st-primary-color, #ff4b4b) ${percent}%, transparent)`;
}

function short(w) {
  return Number.isInteger(w) ? String(w) : String(Number(w.toPrecision(3)));
}

function cell(tag, text, scope) {
  const el = document.createElement(tag);
  el.textContent = text;
  if (scope !== "corner") el.scope = scope;
  else el.className = "corner";
  return el;
}
