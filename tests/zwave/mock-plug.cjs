#!/usr/bin/env node
// A simulated Z-Wave controller with a Zooz ZEN15 power switch and a two-outlet strip (each
// outlet an endpoint with its own switch and meter) on it, for nutups' tests:
// zwave-js's own MockServer class (the one its `mock-server` binary runs), listening on TCP
// for a Z-Wave JS driver, as a USB stick would on a serial port.
//
// Two things differ from the stock binary:
// - The TCP stream is split into single ACK/NAK/CAN bytes and whole frames before the mock
//   controller sees it.  The stock binary hands it raw TCP chunks; an ACK glued to the next
//   frame then makes it fail with "received an invalid message from the host ... does not
//   start with SOF" (5 of 6 fresh starts on this machine).
// - No mDNS advertisement: the tests talk to loopback only.
//
// Usage: node mock-plug.cjs --port P [--node-id N] [--watts W] [--volts V] [--kwh E]
//                           [--strip-id N] [--strip-watts W1,W2]
// Prints "Server listening on tcp://..." once the port is open.  Stops on SIGTERM/SIGINT.
"use strict";

const ciao = require("@homebridge/ciao");

// MockServer advertises itself over mDNS (multicast on every interface): not from a test.
ciao.getResponder = () => ({
	createService: () => ({ advertise: async () => {}, end: async () => {}, destroy: async () => {} }),
	shutdown: async () => {},
});

const { MockServer } = require("zwave-js/Testing");
const { CommandClasses } = require("@zwave-js/core");
const { ccCaps, createMockZWaveRequestFrame } = require("@zwave-js/testing");
const {
	BinarySwitchCCGet,
	BinarySwitchCCReport,
	BinarySwitchCCSet,
	MeterCCReport,
	MultiChannelCCCommandEncapsulation,
	RateType,
} = require("zwave-js");

function option(name, fallback) {
	const i = process.argv.indexOf(`--${name}`);
	if (i === -1) return fallback;
	const value = Number(process.argv[i + 1]);
	if (!Number.isFinite(value)) {
		console.error(`--${name} wants a number`);
		process.exit(2);
	}
	return value;
}

const port = option("port", 5555);
const nodeId = option("node-id", 2);
const loadWatts = option("watts", 60.5); // what the plug's load draws while it is on
const volts = option("volts", 120.4);
let kwh = option("kwh", 1.25);
const stripId = option("strip-id", 3);
const i = process.argv.indexOf("--strip-watts");
const stripWatts = (i === -1 ? "25,40" : process.argv[i + 1]).split(",").map(Number); // outlet 1, outlet 2

const ELECTRIC = 1;
const SCALE = { kWh: 0, W: 2, V: 4, A: 5 }; // Meter CC electric scales (Z-Wave spec, SDS13781)
const SWITCH_STATE = "BinarySwitch_currentValue"; // where zwave-js's Binary Switch behaviour keeps it

function reading(self, scale) {
	const on = self.state.get(SWITCH_STATE) ?? true;
	const watts = on ? loadWatts : 0;
	switch (scale) {
		case SCALE.kWh:
			return kwh;
		case SCALE.W:
			return watts;
		case SCALE.V:
			return volts;
		case SCALE.A:
			return Math.round((watts / volts) * 1000) / 1000;
	}
	return 0;
}

// A real ZEN15 reports its power when the relay moves: so does this one, after the switch.
const reportPowerAfterSwitch = {
	handleCC(controller, self, receivedCC) {
		if (receivedCC instanceof BinarySwitchCCSet) {
			self.state.set(SWITCH_STATE, receivedCC.targetValue);
			console.log(`node ${self.id}: switched ${receivedCC.targetValue ? "on" : "off"}`);
			const report = new MeterCCReport({
				nodeId: controller.ownNodeId,
				type: ELECTRIC,
				scale: SCALE.W,
				rateType: RateType.Consumed,
				value: reading(self, SCALE.W),
				deltaTime: 0,
			});
			setTimeout(() => {
				self.sendToController(createMockZWaveRequestFrame(report, { ackRequested: false }))
					.catch((e) => console.error("meter report after the switch:", e));
			}, 50);
			return { action: "ok" };
		}
	},
};

// The strip: each endpoint (outlet) keeps its own relay and reports its own power.
const stripOn = new Map(stripWatts.map((_, index) => [index + 1, true]));

function stripReading(endpoint, scale) {
	const watts = stripOn.get(endpoint) ? stripWatts[endpoint - 1] : 0;
	switch (scale) {
		case SCALE.kWh:
			return 0.5 * endpoint;
		case SCALE.W:
			return watts;
		case SCALE.V:
			return volts;
		case SCALE.A:
			return Math.round((watts / volts) * 1000) / 1000;
	}
	return 0;
}

const stripSwitch = {
	handleCC(controller, self, receivedCC) {
		const endpoint = receivedCC.endpointIndex;
		if (!stripOn.has(endpoint)) return;
		if (receivedCC instanceof BinarySwitchCCGet) {
			const cc = new BinarySwitchCCReport({ nodeId: controller.ownNodeId, currentValue: stripOn.get(endpoint) });
			return { action: "sendCC", cc };
		}
		if (receivedCC instanceof BinarySwitchCCSet) {
			stripOn.set(endpoint, receivedCC.targetValue);
			console.log(`node ${self.id} endpoint ${endpoint}: switched ${receivedCC.targetValue ? "on" : "off"}`);
			const report = new MultiChannelCCCommandEncapsulation({
				nodeId: controller.ownNodeId,
				endpointIndex: endpoint,
				destination: 0,
				encapsulated: new MeterCCReport({
					nodeId: controller.ownNodeId,
					type: ELECTRIC,
					scale: SCALE.W,
					rateType: RateType.Consumed,
					value: stripReading(endpoint, SCALE.W),
					deltaTime: 0,
				}),
			});
			setTimeout(() => {
				self.sendToController(createMockZWaveRequestFrame(report, { ackRequested: false }))
					.catch((e) => console.error("meter report after the switch:", e));
			}, 50);
			return { action: "ok" };
		}
	},
};

function outlet(endpoint) {
	return {
		commandClasses: [
			ccCaps({ ccId: CommandClasses["Binary Switch"], isSupported: true, version: 1 }),
			ccCaps({
				ccId: CommandClasses.Meter,
				isSupported: true,
				version: 4,
				meterType: ELECTRIC,
				supportedScales: [SCALE.kWh, SCALE.W, SCALE.V, SCALE.A],
				supportedRateTypes: [RateType.Consumed],
				supportsReset: false,
				getValue: (scale) => stripReading(endpoint, scale),
			}),
		],
	};
}

let node; // the mock ZEN15, once the server made it

const config = {
	nodes: [
		{
			id: nodeId,
			capabilities: {
				manufacturerId: 0x027a, // Zooz
				productType: 0x0101,
				productId: 0x000d, // ZEN15 Power Switch
				firmwareVersion: "1.5",
				commandClasses: [
					CommandClasses.Version,
					CommandClasses["Manufacturer Specific"],
					ccCaps({ ccId: CommandClasses["Binary Switch"], isSupported: true, version: 1, defaultValue: true }),
					ccCaps({
						ccId: CommandClasses.Meter,
						isSupported: true,
						version: 4, // with version 3 the driver drops the reports ("Unsupported rate type")
						meterType: ELECTRIC,
						supportedScales: [SCALE.kWh, SCALE.W, SCALE.V, SCALE.A],
						supportedRateTypes: [RateType.Consumed],
						supportsReset: true,
						getValue: (scale) => (node ? reading(node, scale) : 0),
						onReset: () => {
							kwh = 0;
						},
					}),
				],
			},
			behaviors: [reportPowerAfterSwitch],
		},
		{
			id: stripId, // a generic two-outlet strip: no device file matches it
			capabilities: {
				commandClasses: [
					CommandClasses.Version,
					CommandClasses["Manufacturer Specific"],
					ccCaps({ ccId: CommandClasses["Multi Channel"], isSupported: true, version: 4 }),
				],
				endpoints: stripWatts.map((_, index) => outlet(index + 1)),
			},
			behaviors: [stripSwitch],
		},
	],
};

// Frames of the Z-Wave serial API: SOF, length, then `length` bytes (type, function, data, checksum).
const SOF = 0x01;
const SINGLE = new Set([0x06, 0x15, 0x18]); // ACK, NAK, CAN

/** Cut ``buffer`` into whole messages; the rest (an incomplete frame) stays for the next chunk. */
function split(buffer) {
	const pieces = [];
	let at = 0;
	while (at < buffer.length) {
		const first = buffer[at];
		if (SINGLE.has(first)) {
			pieces.push(buffer.subarray(at, at + 1));
			at += 1;
		} else if (first === SOF) {
			if (at + 2 > buffer.length) break;
			const end = at + 2 + buffer[at + 1];
			if (end > buffer.length) break;
			pieces.push(buffer.subarray(at, end));
			at = end;
		} else {
			pieces.push(buffer.subarray(at, at + 1)); // garbage: the controller skips it byte by byte
			at += 1;
		}
	}
	return { pieces, rest: buffer.subarray(at) };
}

(async () => {
	const server = new MockServer({ interface: "127.0.0.1", port, config });
	await server.start();
	node = server.mockNodes.find((n) => n.id === nodeId);

	const serial = server.serialport;
	const write = serial.writeAsync.bind(serial);
	let pending = Buffer.alloc(0);
	let queue = Promise.resolve();
	serial.writeAsync = (chunk) => {
		pending = Buffer.concat([pending, Buffer.from(chunk)]);
		const { pieces, rest } = split(pending);
		pending = Buffer.from(rest);
		queue = queue.then(async () => {
			for (const piece of pieces) await write(Uint8Array.from(piece));
		});
		return queue;
	};
	server.server.on("connection", () => {
		pending = Buffer.alloc(0); // a new driver starts a new stream
	});

	const stop = async () => {
		await server.stop();
		process.exit(0);
	};
	process.on("SIGINT", stop);
	process.on("SIGTERM", stop);
})().catch((e) => {
	console.error(e);
	process.exit(1);
});
