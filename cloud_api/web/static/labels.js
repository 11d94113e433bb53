// Chinese and English names for the states and kinds the API sends.

const NAMES = {
  // approval records
  submitted: "已提交 submitted",
  prereview_passed: "预审通过 pre-review passed",
  documents_in_locker: "材料在柜 documents in locker",
  documents_received: "材料已收 documents received",
  approved: "已办结 approved",
  licence_in_locker: "证照在柜 licence in locker",
  collected: "已取件 collected",
  rejected: "被拒绝 rejected",
  withdrawn: "已撤回 withdrawn",
  // handovers
  reserved: "已预约 reserved",
  deposited: "已存入 deposited",
  expired: "已过期 expired",
  overdue: "逾期 overdue",
  recovered: "已回收 recovered",
  cancelled: "已取消 cancelled",
  dropoff: "投递材料 drop-off",
  pickup: "领取证照 pickup",
  // compartments
  free: "空闲 free",
  occupied: "有物 occupied",
  // alarms
  door_left_open: "门未关 door left open",
  door_forced: "强行开门 door forced",
  door_jammed: "锁卡住 door jammed",
  board_unreachable: "锁板离线 board down",
  locker_offline: "柜机离线 locker off line",
  placement: "格口已更正 compartment corrected",
  item_still_inside: "物品未取出 item still inside",
  mismatch: "云端与柜机不一致 cloud and cabinet differ",
  flooding: "消息过多 locker flooding",
  lockout: "反复猜码锁定 repeated guessing, locked",
  // remote opens
  pending: "等待中 pending",
  opened: "已打开 opened",
  jammed: "锁卡住 jammed",
  no_response: "无响应 no response",
  timeout: "超时 timed out",
  // commands
  ok: "成功 ok",
  waiting: "等待回复 waiting",
  // SMS
  sending: "发送中 sending",
  sent: "已发送 sent",
  delivered: "已送达 delivered",
  failed: "失败 failed",
  undelivered: "未送达 undelivered",
  dead: "放弃 gave up",
};

export function name(value) {
  return NAMES[value] || value;
}

const TONES = {
  good: ["ok", "free", "collected", "opened", "delivered", "sent", "documents_received", "approved"],
  warn: ["reserved", "deposited", "pending", "sending", "documents_in_locker", "licence_in_locker"],
  bad: [
    "overdue", "failed", "dead", "undelivered", "jammed", "no_response", "timeout", "rejected",
    "door_forced", "door_jammed", "locker_offline", "board_unreachable", "door_left_open",
    "placement", "item_still_inside", "mismatch", "flooding", "lockout",
  ],
};

export function tone(value) {
  for (const [key, list] of Object.entries(TONES)) if (list.includes(value)) return key;
  return "";
}
