// What training shows and leaves behind: a live progress line (plain periodic lines when
// the output is not a terminal), one JSON object per step, and an SVG loss curve.

import Foundation
import ZerothOrder

struct ProgressDisplay {
    let total: Int
    let isTerminal = isatty(STDERR_FILENO) != 0
    private let started = ContinuousClock.now
    private var runningLoss: Double?
    private var lastPrinted = ContinuousClock.now

    /// Steps done before this run started (when resuming).
    private let skipped: Int

    init(total: Int, first: Int = 1) {
        self.total = total
        skipped = first - 1
    }

    mutating func update(_ r: StepRecord, lastEval: Double?) {
        runningLoss = runningLoss.map { 0.9 * $0 + 0.1 * r.loss } ?? r.loss
        let elapsed = (ContinuousClock.now - started).seconds
        let rate = Double(r.step - skipped) / max(elapsed, 1e-9)
        let eta = Double(total - r.step) / max(rate, 1e-9)
        let evalText = lastEval.map { String(format: " eval %.4f", $0) } ?? ""
        let text = String(format: "%d/%d loss %.4f%@ %.2f steps/s ETA %@ RSS %@",
                          r.step, total, runningLoss!, evalText, rate, duration(eta), megabytes(peakRSS()))
        if isTerminal {
            let width = 24
            let done = width * r.step / max(total, 1)
            let bar = String(repeating: "=", count: done) + (done < width ? ">" : "") + String(repeating: " ", count: max(0, width - done - 1))
            Console.writeError("\r[\(bar)] \(text)\u{1B}[K")
        } else if r.evalLoss != nil || r.step == total || (ContinuousClock.now - lastPrinted).seconds >= 10 {
            warn("step \(text)")
            lastPrinted = .now
        }
    }

    func finish() {
        if isTerminal { Console.writeError("\n") }
    }

    private func duration(_ s: Double) -> String {
        guard s.isFinite else { return "?" }
        let t = Int(s.rounded())
        return t >= 3600 ? String(format: "%dh%02dm", t / 3600, t / 60 % 60) : String(format: "%dm%02ds", t / 60, t % 60)
    }
}

/// One JSON object per line per step (a NaN or infinite loss is written as null).
/// A write that fails (a full disk) stops the run with the log's path and the reason.
final class JSONLog {
    private let path: String
    private let descriptor: Int32

    init(path: String) throws {
        self.path = path
        descriptor = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard descriptor >= 0 else {
            throw ValidationErrorText("cannot create the log file \(path): \(String(cString: strerror(errno)))")
        }
    }

    /// Step 0: the held-out NLL before training.
    func writeInitial(evalNLL: Double) throws {
        try append(jsonText(["step": 0, "eval_nll": evalNLL]))
    }

    /// One step: its loss, derivatives, learning rate (the schedule's value) and, when the
    /// trained sets have their own rates, each set's rate at this step.
    func write(_ r: StepRecord, setRates: [String: Double] = [:]) throws {
        var object: [String: Any] = ["step": r.step, "loss": r.loss, "d": r.derivatives.map(Double.init),
                                     "lr": Double(r.learningRate), "seconds": r.seconds, "peak_rss": peakRSS()]
        if !setRates.isEmpty { object["lr_sets"] = setRates }
        if r.boundedGroups > 0 { object["bounded"] = r.boundedGroups }
        if let e = r.evalLoss { object["eval_nll"] = e }
        try append(jsonText(object))
    }

    private func append(_ line: String) throws {
        let bytes = Array((line + "\n").utf8)
        var done = 0
        while done < bytes.count {
            let n = bytes.withUnsafeBytes { systemWrite(descriptor, $0.baseAddress! + done, bytes.count - done) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw ValidationErrorText("cannot write the log file \(path): \(String(cString: strerror(errno)))") }
            done += n
        }
    }

    deinit { close(descriptor) }
}

/// write(2) by its C name (`JSONLog.write` shadows it inside the class).
private func systemWrite(_ fd: Int32, _ buffer: UnsafeRawPointer, _ count: Int) -> Int {
    write(fd, buffer, count)
}

struct ValidationErrorText: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}

/// The training loss (running mean) and held-out NLL against steps, as an SVG picture.
struct LossCurve {
    let records: [StepRecord]
    let initialEval: Double?

    func write(to path: String) throws {
        let w = 640.0, h = 360.0, left = 60.0, right = 20.0, top = 20.0, bottom = 40.0
        var smoothed = [(Double, Double)]()
        var running: Double?
        for r in records {
            running = running.map { 0.95 * $0 + 0.05 * r.loss } ?? r.loss
            smoothed.append((Double(r.step), running!))
        }
        var evals = records.compactMap { r in r.evalLoss.map { (Double(r.step), $0) } }
        if let initialEval { evals.insert((0, initialEval), at: 0) }
        let all = smoothed.map(\.1) + evals.map(\.1)
        guard let lo = all.min(), let hi = all.max(), let lastStep = records.last?.step else { return }
        let span = max(hi - lo, 1e-6)
        func x(_ s: Double) -> Double { left + (w - left - right) * s / Double(max(lastStep, 1)) }
        func y(_ v: Double) -> Double { top + (h - top - bottom) * (1 - (v - lo) / span) }
        func polyline(_ points: [(Double, Double)]) -> String {
            points.enumerated().map { i, p in String(format: "%@%.1f,%.1f", i == 0 ? "M" : "L", x(p.0), y(p.1)) }.joined(separator: " ")
        }
        var svg = """
            <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(w))" height="\(Int(h))" font-family="sans-serif" font-size="12">
            <rect width="100%" height="100%" fill="white"/>
            <line x1="\(left)" y1="\(h - bottom)" x2="\(w - right)" y2="\(h - bottom)" stroke="black"/>
            <line x1="\(left)" y1="\(top)" x2="\(left)" y2="\(h - bottom)" stroke="black"/>
            <text x="\(w / 2)" y="\(h - 8)" text-anchor="middle">step</text>
            <text x="\(left - 8)" y="\(top + 10)" text-anchor="end">\(String(format: "%.3f", hi))</text>
            <text x="\(left - 8)" y="\(h - bottom)" text-anchor="end">\(String(format: "%.3f", lo))</text>
            <text x="\(w - right)" y="\(h - bottom + 16)" text-anchor="end">\(lastStep)</text>
            <path d="\(polyline(smoothed))" fill="none" stroke="#1f77b4" stroke-width="1.5"/>
            <text x="\(w - right - 4)" y="\(top + 12)" text-anchor="end" fill="#1f77b4">training loss (running mean)</text>

            """
        if !evals.isEmpty {
            svg += """
                <path d="\(polyline(evals))" fill="none" stroke="#d62728" stroke-width="2"/>
                <text x="\(w - right - 4)" y="\(top + 28)" text-anchor="end" fill="#d62728">held-out NLL</text>

                """
        }
        svg += "</svg>\n"
        try svg.write(toFile: path, atomically: true, encoding: .utf8)
    }
}
