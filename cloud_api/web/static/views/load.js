// Load a licence: pick an approved record, a locker and a size, then start the load.
// The pickup SMS goes out only when the locker reports the licence deposited.

import { get, post } from "../api.js";
import { bi, h, notice, panel, showToast, when } from "../dom.js";
import { name } from "../labels.js";

function sizeOptions(locker) {
  const bySize = Object.fromEntries((locker?.occupancy || []).map((o) => [o.size, o]));
  return ["S", "M", "L"].map((size) => {
    const o = bySize[size];
    const label = o ? `${size} · 空 ${o.free}/${o.total} free` : `${size} · 无 none`;
    return h("option", { value: size, disabled: !o || o.free === 0 }, label);
  });
}

export async function render(main) {
  const [records, lockers] = await Promise.all([
    get("/api/v1/dashboard/records?status=approved&limit=500"),
    get("/api/v1/lockers?limit=500"),
  ]);
  const result = h("div", { id: "load-result" });
  const record = h(
    "select",
    { id: "load-record", name: "record" },
    h("option", { value: "" }, records.length ? "选择审批件 choose a record" : "没有已办结的审批件 no approved records"),
    records.map((r) => h("option", { value: r.application_number }, `${r.application_number} · ${r.applicant_name} · ${r.matter_name}`)),
  );
  const locker = h(
    "select",
    { id: "load-locker", name: "locker" },
    lockers.map((l) => h("option", { value: l.id }, `${l.id} · ${l.site}`)),
  );
  const size = h("select", { id: "load-size", name: "size" });
  const refreshSizes = () => {
    const chosen = lockers.find((l) => l.id === locker.value);
    size.replaceChildren(...sizeOptions(chosen));
    const firstFree = [...size.options].find((o) => !o.disabled && o.value === "M") || [...size.options].find((o) => !o.disabled);
    if (firstFree) size.value = firstFree.value;
  };
  locker.addEventListener("change", refreshSizes);
  refreshSizes();
  const button = h("button", { type: "submit", class: "primary", id: "load-submit" }, "开始放入 Start load");

  const submit = async (event) => {
    event.preventDefault();
    if (!record.value || !locker.value || !size.value) {
      result.replaceChildren(notice("error", "请选择审批件、柜机和格口大小 Choose a record, a locker and a size"));
      return;
    }
    button.disabled = true;
    try {
      const ho = await post("/api/v1/staff/loads", {
        application_number: record.value,
        locker_id: locker.value,
        size: size.value,
      });
      result.replaceChildren(
        notice(
          "good",
          `请到柜机 ${ho.locker_id} 打开 ${ho.compartment_number} 号格口放入证照 ` +
            `Go to locker ${ho.locker_id}, compartment ${ho.compartment_number}, and put the licence in ` +
            `(交接 handover ${ho.id}, ${name(ho.state)}, 期限 until ${when(ho.expires_at)}).`,
          { "data-handover-id": ho.id, "data-compartment": ho.compartment_number },
        ),
      );
      showToast("已预留格口 Compartment reserved", "good");
      [...record.options].find((o) => o.value === ho.application_number)?.remove();
      record.value = "";
    } catch (err) {
      result.replaceChildren(notice("error", `无法开始 Cannot start: ${err.message}`));
    } finally {
      button.disabled = false;
    }
  };

  main.replaceChildren(
    h("div", { class: "page-head" }, h("h1", {}, bi("放入证照", "Load a licence"))),
    panel(
      bi("开始放入", "Start a load"),
      h(
        "form",
        { class: "stack", id: "load-form", novalidate: true, onsubmit: submit },
        h("label", {}, "审批件 Approved record", record),
        h("label", {}, "柜机 Locker", locker),
        h("label", {}, "格口大小 Size", size),
        button,
      ),
      result,
    ),
  );
}
