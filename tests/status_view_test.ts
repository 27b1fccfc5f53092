import assert from "node:assert/strict";
import type { LinkStatus, StatusReport } from "../lib/link_stats.ts";
import { formatBytes, formatDuration, renderStatus } from "../lib/status_view.ts";

function link(name: string, fields: Partial<LinkStatus> = {}): LinkStatus {
  return {
    name,
    up: true,
    rttSmoothedMs: 12.34,
    rttRecentMs: 15,
    lossPercent: 0,
    probesSent: 10,
    probesAnswered: 10,
    firstPackets: 60,
    firstRecent: 6,
    firstPercent: 60,
    txBytes: 1536,
    txDatagrams: 2,
    rxBytes: 5 * 1024 * 1024,
    rxDatagrams: 4000,
    lastHeardSecondsAgo: 0.25,
    ...fields,
  };
}

const CLIENT: StatusReport = {
  role: "client",
  tun: "tuxburst0",
  pid: 1234,
  uptimeSeconds: 125,
  peers: [{
    name: "server",
    address: "10.0.3.2:40000",
    session: { id: 0x1a2b, ageSeconds: 61 },
    links: [
      link("upa"),
      link("upb", {
        up: false,
        rttSmoothedMs: 120,
        rttRecentMs: null,
        lossPercent: 100,
        firstPercent: 0,
        lastHeardSecondsAgo: 12,
      }),
      link("wwan0", {
        up: false,
        rttSmoothedMs: null,
        rttRecentMs: null,
        lossPercent: null,
        firstPercent: null,
        txBytes: 0,
        rxBytes: 0,
        lastHeardSecondsAgo: null,
      }),
    ],
  }],
  counters: {
    outboundPackets: 10,
    inboundPackets: 9,
    datagramsSent: 30,
    duplicates: 8,
    badAuth: 2,
  },
};

Deno.test("status view: human-readable sizes and durations", () => {
  assert.equal(formatBytes(0), "0 B");
  assert.equal(formatBytes(1023), "1023 B");
  assert.equal(formatBytes(1536), "1.50 KiB");
  assert.equal(formatBytes(5 * 1024 * 1024), "5.00 MiB");
  assert.equal(formatBytes(300 * 1024 ** 3), "300.0 GiB");
  assert.equal(formatDuration(42.9), "42s");
  assert.equal(formatDuration(125), "2m05s");
  assert.equal(formatDuration(3725), "1h02m");
  assert.equal(formatDuration(90000), "1d01h");
  assert.equal(formatDuration(-3), "0s");
});

Deno.test("status view: the client table has one aligned row per uplink", () => {
  const text = renderStatus(CLIENT);
  const lines = text.trimEnd().split("\n");
  assert.equal(lines[0], "tuxburst client on tuxburst0 (pid 1234), up 2m05s");
  assert.equal(lines[1], "server 10.0.3.2:40000: session 6699, age 1m01s");
  assert.match(lines[2], /^ {2}UPLINK +STATE +RTT ms avg\/last +LOSS +FIRST +TX +RX +LAST HEARD$/);
  const rows = lines.slice(3, 6).map((line) => line.trim().split(/ {2,}/));
  assert.deepEqual(rows[0], [
    "upa",
    "up",
    "12.3/15.0",
    "0 %",
    "60 %",
    "1.50 KiB",
    "5.00 MiB",
    "0.3s ago",
  ]);
  assert.deepEqual(rows[1], [
    "upb",
    "down",
    "120/-",
    "100 %",
    "0 %",
    "1.50 KiB",
    "5.00 MiB",
    "12s ago",
  ]);
  assert.deepEqual(rows[2], ["wwan0", "down", "-/-", "-", "-", "0 B", "0 B", "never"]);
  // Columns line up: every row's STATE starts where the header's does.
  const column = lines[2].indexOf("STATE");
  for (const line of lines.slice(3, 6)) assert.match(line.slice(column), /^(up|down)/);
  assert.equal(
    lines[6],
    "packets out 10, in 9; datagrams sent 30; duplicates dropped 8",
  );
  assert.equal(lines[7], "drops and errors: badAuth 2");
  assert.equal(lines.length, 8);
});

Deno.test("status view: the server lists each peer with its paths, or says there are none", () => {
  const server: StatusReport = {
    role: "server",
    tun: "tb1",
    pid: 7,
    uptimeSeconds: 5,
    peers: [
      {
        name: "client",
        address: null,
        session: { id: 0xdeadbeef, ageSeconds: 3 },
        links: [link("10.1.1.2:51000", { lossPercent: null }), link("10.2.2.2:42000")],
      },
      { name: "laptop", address: null, session: null, links: [] },
    ],
    counters: {},
  };
  const lines = renderStatus(server).split("\n");
  assert.equal(lines[1], "peer client: session 3735928559, age 3s");
  assert.match(lines[2], /^ {2}PATH +STATE/);
  assert.match(lines[3], /^ {2}10\.1\.1\.2:51000 +up +12\.3\/15\.0 +- +60 %/);
  assert.match(lines[4], /^ {2}10\.2\.2\.2:42000 +up/);
  assert.equal(lines[5], "peer laptop: no session");
  assert.equal(lines[6], "  (no paths)");
  assert.ok(!renderStatus(server).includes("drops and errors"), "nothing dropped, nothing said");
});
