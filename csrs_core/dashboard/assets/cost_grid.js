// The cost-matrix grid: one checkbox per (true class, predicted class) cell, rows the true class.
// data: {names: [...], matrix: [[0|1]]}. A click sends the whole matrix as the trigger "matrix": a
// one-shot event, so the server hears every click, also one that repeats an earlier matrix.
export default function (component) {
  const { data, setTriggerValue, parentElement } = component;
  const names = data.names;
  let table = parentElement.querySelector("table");
  if (!table || table.dataset.names !== JSON.stringify(names)) {
    if (table) table.remove();
    table = build(names);
    parentElement.appendChild(table);
  }
  table.send = setTriggerValue;  // the latest renderer's sender
  for (const box of table.querySelectorAll("input")) {
    box.checked = data.matrix[box.dataset.j][box.dataset.k] === 1;
  }
}

function build(names) {
  const table = document.createElement("table");
  table.dataset.names = JSON.stringify(names);
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
      box.title = j === k ? "a correct prediction cannot cost" : `${rowName} predicted as ${colName}`;
      box.setAttribute("aria-label", `${rowName} → ${colName}`);
      row.insertCell().appendChild(box);
    });
  });
  table.addEventListener("change", () => {
    const matrix = names.map(() => names.map(() => 0));
    for (const box of table.querySelectorAll("input")) {
      if (box.checked) matrix[box.dataset.j][box.dataset.k] = 1;
    }
    table.send("matrix", matrix);
  });
  return table;
}

function cell(tag, text, scope) {
  const el = document.createElement(tag);
  el.textContent = text;
  if (scope !== "corner") el.scope = scope;
  else el.className = "corner";
  return el;
}
