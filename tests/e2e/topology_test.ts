/**
 * Self-test of the lab harness, without tuxburst: the topology routes and
 * filters as LAB.md says, blackholes cut exactly one link, the tools work on
 * real packets, and disposing leaves nothing behind. Root only.
 */
import assert from "node:assert/strict";
import { ADDRESSES, Lab, parsePing, udpSinkCounts, waitUntil } from "../../lab/lab.ts";
import { ipv4Packets, udpDatagrams } from "../../lab/tools/pcap.ts";

const availability = Lab.available(["tcpdump"]);
const ignore = !availability.ok;
if (!availability.ok) console.warn(`e2e topology tests skipped: ${availability.reason}`);

async function namespacesWithPrefix(prefix: string): Promise<string[]> {
  const { stdout } = await new Deno.Command("ip", { args: ["netns", "list"], stderr: "null" })
    .output();
  return new TextDecoder().decode(stdout).split("\n").map((line) => line.split(" ")[0])
    .filter((name) => name.startsWith(`${prefix}-`));
}

function processExists(pid: number): boolean {
  try {
    Deno.kill(pid, "SIGCONT");
    return true;
  } catch {
    return false;
  }
}

Deno.test({ name: "topology: routes, NAT, filters and blackholes", ignore }, async (t) => {
  await using lab = await Lab.create();

  await t.step("cli reaches srv over each uplink, NATed to the ISP's address", async () => {
    const capture = await lab.capture("srv", "wan", ["icmp"]);
    const viaA = await lab.ping("cli", ADDRESSES.srv, { count: 2, intervalMs: 100, device: "upa" });
    const viaB = await lab.ping("cli", ADDRESSES.srv, { count: 2, intervalMs: 100, device: "upb" });
    const sources = new Set(
      ipv4Packets(await capture.stop()).filter((p) => p.dst === ADDRESSES.srv).map((p) => p.src),
    );
    assert.equal(viaA.received, 2, viaA.output);
    assert.equal(viaB.received, 2, viaB.output);
    assert.deepEqual([...sources].sort(), [ADDRESSES.ispA, ADDRESSES.ispB]);
  });

  await t.step("web is reachable from srv only", async () => {
    for (const device of ["upa", "upb"]) {
      const result = await lab.ping("cli", ADDRESSES.web, {
        count: 2,
        intervalMs: 100,
        replyWaitMs: 500,
        device,
      });
      assert.equal(
        result.received,
        0,
        `cli reached web directly over ${device}:\n${result.output}`,
      );
    }
    const fromIsp = await lab.ping("ispA", ADDRESSES.web, { count: 1, replyWaitMs: 500 });
    assert.equal(fromIsp.received, 0, fromIsp.output);
    const fromSrv = await lab.ping("srv", ADDRESSES.web, { count: 2, intervalMs: 100 });
    assert.equal(fromSrv.received, 2, fromSrv.output);
  });

  await t.step("a blackhole on link A cuts upa only, both ways, and lifts", async () => {
    await lab.blackhole("a", true);
    const viaA = await lab.ping("cli", ADDRESSES.srv, {
      count: 3,
      intervalMs: 100,
      replyWaitMs: 500,
      device: "upa",
    });
    const viaB = await lab.ping("cli", ADDRESSES.srv, { count: 3, intervalMs: 100, device: "upb" });
    const toCli = await lab.ping("ispA", ADDRESSES.cliA, {
      count: 2,
      intervalMs: 100,
      replyWaitMs: 500,
    });
    const dropped = await lab.blackhole("a", false);
    assert.equal(viaA.received, 0, viaA.output);
    assert.equal(viaB.received, 3, viaB.output);
    assert.equal(toCli.received, 0, toCli.output);
    assert.ok(dropped >= 5, `the blackhole counted ${dropped} dropped packets`);
    assert.equal(await lab.blackholeDrops("a"), 0);
    const after = await lab.ping("cli", ADDRESSES.srv, {
      count: 2,
      intervalMs: 100,
      device: "upa",
    });
    assert.equal(after.received, 2, after.output);
  });

  await t.step("srv masquerades the tunnel subnet towards web", async () => {
    const rules = await lab.exec("srv", ["nft", "list", "ruleset"], { check: true });
    assert.match(rules.stdout, /ip saddr 10\.99\.0\.0\/24 masquerade/);
    const forwarding = await lab.exec("srv", ["sysctl", "-n", "net.ipv4.ip_forward"], {
      check: true,
    });
    assert.equal(forwarding.stdout.trim(), "1");
  });
});

Deno.test({ name: "topology: the tools move and check real traffic", ignore }, async (t) => {
  await using lab = await Lab.create();

  await t.step("tcp_stream: intact echo, and the server sees the ISP's address", async () => {
    const server = lab.tool("srv", "tcp_stream.ts", [
      "server",
      "--port",
      "5001",
      "--max-seconds",
      "30",
    ]);
    await server.waitForOutput(/"listening"/);
    const client = lab.tool("cli", "tcp_stream.ts", [
      "client",
      "--host",
      ADDRESSES.srv,
      "--port",
      "5001",
      "--seconds",
      "1",
      "--rate",
      "2000000",
    ]);
    const status = await client.wait(15_000);
    assert.equal(status?.code, 0, client.describe());
    const report = client.jsonLines<
      { event: string; ok: boolean; sent: number; received: number }
    >()
      .find((line) => line.event === "report");
    assert.ok(
      report?.ok && report.sent > 1_000_000 && report.received === report.sent,
      client.describe(),
    );
    const accept = server.jsonLines<{ event: string; remote: string }>().find((line) =>
      line.event === "accept"
    );
    assert.match(accept?.remote ?? "", new RegExp(`^${ADDRESSES.ispA.replaceAll(".", "\\.")}:`));
  });

  await t.step("udp_send, tcpdump capture, pcap reader, replay and garbage", async () => {
    const sink = lab.tool("srv", "udp_sink.ts", ["--port", "7000", "--max-seconds", "30"]);
    await sink.waitForOutput(/"listening"/);
    const capture = await lab.capture("ispA", "wan", ["udp", "and", "dst", "port", "7000"]);
    const sender = lab.tool("cli", "udp_send.ts", [
      "unique",
      "--to",
      `${ADDRESSES.srv}:7000`,
      "--count",
      "50",
    ]);
    assert.equal((await sender.wait(15_000))?.code, 0, sender.describe());
    await waitUntil("50 datagrams at the sink", 5000, () => udpSinkCounts(sink).size === 50);
    const pcap = await capture.stop();

    const datagrams = udpDatagrams(pcap);
    assert.equal(datagrams.length, 50);
    assert.ok(
      datagrams.every((d) =>
        d.src === ADDRESSES.ispA && d.dst === ADDRESSES.srv && d.dstPort === 7000
      ),
    );
    assert.equal(new TextDecoder().decode(datagrams[0].payload), "msg-000001");

    const replay = lab.tool("ispA", "udp_send.ts", [
      "replay",
      "--to",
      `${ADDRESSES.srv}:7000`,
      "--pcap",
      capture.file,
      "--dport",
      "7000",
    ]);
    assert.equal((await replay.wait(15_000))?.code, 0, replay.describe());
    await waitUntil(
      "every payload twice",
      5000,
      () => [...udpSinkCounts(sink).values()].every((n) => n === 2),
    );

    const garbage = lab.tool("ispA", "garbage.ts", [
      "--to",
      `${ADDRESSES.srv}:7000`,
      "--count",
      "300",
      "--rate",
      "3000",
      "--pcap",
      capture.file,
      "--dport",
      "7000",
      "--damaged",
      "100",
    ]);
    assert.equal((await garbage.wait(15_000))?.code, 0, garbage.describe());
    assert.match(garbage.stdout, /"sent":400,"random":300,"damaged":100/);
    await waitUntil("400 more datagrams", 5000, () => sink.jsonLines().length >= 1 + 100 + 400);
  });
});

Deno.test({
  name: "topology: dispose removes namespaces and processes, also after a failure",
  ignore,
}, async () => {
  let prefix = "";
  let pid = 0;
  await assert.rejects(async () => {
    await using lab = await Lab.create();
    prefix = lab.prefix;
    const sleeper = lab.spawn("web", ["sleep", "60"]);
    pid = sleeper.pid;
    assert.equal((await namespacesWithPrefix(prefix)).length, 6);
    throw new Error("a test failed");
  }, /a test failed/);
  assert.deepEqual(await namespacesWithPrefix(prefix), []);
  assert.equal(processExists(pid), false, `pid ${pid} survived the lab`);
});

Deno.test("parsePing counts losses, duplicates and gaps", () => {
  const output = [
    "PING 172.16.4.2 (172.16.4.2) 56(84) bytes of data.",
    "[1700000000.000000] 64 bytes from 172.16.4.2: icmp_seq=1 ttl=62 time=0.100 ms",
    "[1700000000.200000] no answer yet for icmp_seq=2",
    "[1700000000.300000] no answer yet for icmp_seq=3",
    "[1700000000.400000] 64 bytes from 172.16.4.2: icmp_seq=4 ttl=62 time=0.100 ms",
    "[1700000000.401000] 64 bytes from 172.16.4.2: icmp_seq=4 ttl=62 time=0.900 ms (DUP!)",
    "[1700000000.500000] 64 bytes from 172.16.4.2: icmp_seq=5 ttl=62 time=0.100 ms",
    "",
    "--- 172.16.4.2 ping statistics ---",
    "6 packets transmitted, 3 received, +1 duplicates, 50% packet loss, time 500ms",
  ].join("\n");
  const result = parsePing(output);
  assert.equal(result.transmitted, 6);
  assert.equal(result.received, 3);
  assert.deepEqual(result.lost, [2, 3, 6]);
  assert.equal(result.duplicates, 1);
  assert.equal(result.longestLossRun, 2);
  assert.equal(Math.round(result.longestGapMs), 400);
});

Deno.test("parsePing reads replies from IPv6 addresses too", () => {
  const result = parsePing([
    "PING fd16:4::2(fd16:4::2) 56 data bytes",
    "[1700000000.000000] 64 bytes from fd16:4::2: icmp_seq=1 ttl=62 time=2.67 ms",
    "[1700000000.100000] no answer yet for icmp_seq=2",
    "[1700000000.200000] 64 bytes from fd16:4::2: icmp_seq=3 ttl=62 time=1.77 ms",
    "--- fd16:4::2 ping statistics ---",
    "3 packets transmitted, 2 received, 33% packet loss, time 200ms",
  ].join("\n"));
  assert.deepEqual([result.received, result.lost], [2, [2]]);
  assert.deepEqual(result.replies.map((r) => r.rttMs), [2.67, 1.77]);
});

Deno.test("pcap reader: LINUX_SLL, big-endian, nanosecond files", () => {
  // One UDP datagram 10.0.0.1:1234 → 10.0.0.2:40000 with payload "hi", behind a 16-byte SLL header.
  const ip = [0x45, 0, 0, 30, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2];
  const udp = [0x04, 0xd2, 0x9c, 0x40, 0, 10, 0, 0, 0x68, 0x69];
  const sll = [0, 0, 0, 1, 0, 6, 0, 0, 0, 0, 0, 0, 0, 0, 0x08, 0x00];
  const frame = [...sll, ...ip, ...udp];
  const file = new Uint8Array(24 + 16 + frame.length);
  const view = new DataView(file.buffer);
  view.setUint32(0, 0xa1b23c4d, false); // nanosecond magic, written big-endian
  view.setUint32(20, 113, false);
  view.setUint32(24, 1_700_000_000, false);
  view.setUint32(28, 500_000_000, false);
  view.setUint32(32, frame.length, false);
  view.setUint32(36, frame.length, false);
  file.set(frame, 40);
  const [datagram, ...rest] = udpDatagrams(file);
  assert.equal(rest.length, 0);
  assert.equal(datagram.src, "10.0.0.1");
  assert.equal(datagram.dst, "10.0.0.2");
  assert.equal(datagram.srcPort, 1234);
  assert.equal(datagram.dstPort, 40000);
  assert.equal(new TextDecoder().decode(datagram.payload), "hi");
  assert.equal(datagram.at, 1_700_000_000_500);
  // A record cut short ends the reading instead of throwing.
  assert.deepEqual(udpDatagrams(file.subarray(0, file.length - 3)), []);
});

Deno.test({
  name: "topology: with wires, an impairer on link A delays link A only, until it stops",
  ignore,
}, async () => {
  await using lab = await Lab.create({ wires: true });
  /** Round trips of 5 pings over `device`, all of which must be answered. */
  const rtts = async (device: string) => {
    const result = await lab.ping("cli", ADDRESSES.srv, { count: 5, intervalMs: 50, device });
    assert.equal(result.received, 5, result.output);
    return result.replies.map((reply) => reply.rttMs);
  };
  assert.ok((await rtts("upa")).every((ms) => ms < 10), "link A is plain before");
  const impairer = await lab.impair("a", ["--delay", "20", "--seed", "1", "--stats-interval", "0"]);
  const slow = await rtts("upa");
  assert.ok(slow.every((ms) => ms >= 40 && ms < 80), `link A: ${slow.join(", ")} ms`);
  const fast = await rtts("upb");
  assert.ok(fast.every((ms) => ms < 10), `link B: ${fast.join(", ")} ms`);
  assert.equal((await impairer.stop()).code, 0, impairer.describe());
  assert.ok((await rtts("upa")).every((ms) => ms < 10), "link A is plain again after");
});
