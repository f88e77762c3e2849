package exercises

import "time"

// The dashboard's exercise API in JSON (GET /api/lab/exercises/{id}): the dashboard
// writes these, `lab exercise` reads them, so both sides are one declaration.

// View is one exercise as the API answers: what it is, its README (Markdown), its
// steps with their state, and where the run stands.
type View struct {
	ID            string     `json:"id"`
	Title         string     `json:"title"`
	Level         string     `json:"level"`
	Minutes       int        `json:"minutes"`
	Patterns      []string   `json:"patterns"`
	Prerequisites []string   `json:"prerequisites"`
	Diagnosis     bool       `json:"diagnosis"`
	README        string     `json:"readme"`
	State         string     `json:"state"` // "" not started, open, completed
	Steps         []StepView `json:"steps"`
	// Status is the engine's, evaluated now (the current step ticks if its check holds).
	Status  Status     `json:"status"`
	Solving *SolveView `json:"solving,omitempty"`
}

// Step states, as the page shows them.
const (
	StepDone    = "done"
	StepCurrent = "current"
	StepLocked  = "locked"
)

// StepView is one step of a View.
type StepView struct {
	ID           string         `json:"id"`
	Number       int            `json:"number"`
	Instructions string         `json:"instructions"` // Markdown
	State        string         `json:"state"`
	DoneAt       *time.Time     `json:"doneAt,omitempty"`
	Missing      string         `json:"missing,omitempty"`
	MissingHTML  string         `json:"missingHTML,omitempty"` // Missing rendered (Markdown), or that the lab is watching
	Waiting      bool           `json:"waiting,omitempty"`
	Hints        []string       `json:"hints"`     // revealed so far
	HintsHTML    []string       `json:"hintsHTML"` // Hints rendered (Markdown), for the page
	HintsTotal   int            `json:"hintsTotal"`
	Question     *QuestionView  `json:"question,omitempty"`
	Answers      []Given        `json:"answers,omitempty"`
	Evidence     []EvidenceView `json:"evidence,omitempty"`
}

// QuestionView is what a step asks: never what it expects.
type QuestionView struct {
	Text    string   `json:"text"`
	Choices []string `json:"choices,omitempty"`
}

// EvidenceView is one piece of evidence with where the learner finds it (a dashboard
// path, "" where it has no page).
type EvidenceView struct {
	Evidence
	Href  string `json:"href,omitempty"`
	Label string `json:"label"`
}

// SolveView is one "show me": the current step's reference solution, action by action.
type SolveView struct {
	Step    string       `json:"step"`
	Running bool         `json:"running"`
	Actions []SolveEvent `json:"actions"`
	Error   string       `json:"error,omitempty"`
	Started time.Time    `json:"started"`
}
